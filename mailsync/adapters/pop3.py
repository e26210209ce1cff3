"""A POP3 mailbox that never deletes.

POP3 deletes only messages marked with DELE, and only when the session ends with QUIT. This
adapter has no DELE at all, and always ends with QUIT (a dropped connection leaves the
mailbox untouched as well), so every message stays on the server.

Pure Python: no Django imports.
"""

from __future__ import annotations

import poplib
import re
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress

from mailsync.adapters.base import Credentials, ServerSettings
from mailsync.adapters.steps import StepTracking
from mailsync.errors import (
    MissingCapability,
    ProtocolError,
    UnexpectedGreeting,
)

__all__ = ["Pop3Mailbox"]

_STEP_ERRORS = (
    poplib.error_proto,
    OSError,
    EOFError,
    ValueError,
    MissingCapability,
    UnexpectedGreeting,
    ProtocolError,
)


# poplib refuses lines over 2,048 bytes, but real mail has longer ones (unwrapped HTML);
# still cap them so a broken server cannot make us buffer without end.
_MAX_LINE = 4 * 1024 * 1024


# "TOP n lines" with more lines than any message has returns the whole message (RFC 1939).
_WHOLE_BODY = 2**31 - 1


class _Client(poplib.POP3):
    """poplib with an optional implicit-TLS wrap, long lines, and no leaked sockets."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        tls: ssl.SSLContext | None,
        progress: Callable[[str], None],
        open_socket: Callable[[float | None], socket.socket],
    ) -> None:
        self._implicit_tls = tls
        self._progress = progress
        self._open_socket = open_socket
        try:
            super().__init__(host, port, timeout)
        except BaseException as exc:
            # poplib leaves the socket open when the greeting is wrong.
            for stream in (getattr(self, "file", None), getattr(self, "sock", None)):
                if stream is not None:
                    with suppress(OSError):
                        stream.close()
            if isinstance(exc, TimeoutError) and getattr(self, "sock", None) is not None:
                # Connected but no greeting: likely plain POP3 to an implicit-TLS port (995).
                raise UnexpectedGreeting("POP3", "") from exc
            if isinstance(exc, poplib.error_proto) and exc.args:
                greeting = exc.args[0]
                if isinstance(greeting, bytes) and not greeting.startswith(b"-ERR"):
                    text = greeting.decode("utf-8", "replace").strip()
                    raise UnexpectedGreeting("POP3", text) from exc
            raise

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise EOFError("the server closed the connection")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def _create_socket(self, timeout: float):  # type: ignore[override]
        # Never poplib's own create_connection(host): a second DNS lookup (rebinding).
        sock = self._open_socket(timeout)
        if self._implicit_tls is None:
            return sock
        self._progress("tls")
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class Pop3Mailbox(StepTracking):
    """A POP3 session; use as a context manager. Message numbers are only valid within one
    session: keep UIDL values (``uidl()``'s keys) as the durable identity."""

    step_errors = _STEP_ERRORS

    def __init__(self, settings: ServerSettings, credentials: Credentials) -> None:
        if credentials.password is None:
            raise ValueError("POP3 needs a password (XOAUTH2 over POP3 is not supported)")
        self.settings = settings
        self._credentials = credentials
        self.step = "connect"
        self.capabilities: dict[str, list[str]] = {}
        self._client: _Client | None = None

    @property
    def client(self) -> _Client:
        if self._client is None:
            raise RuntimeError("not connected: use `with Pop3Mailbox(...)` or call open()")
        return self._client

    def open(self) -> None:
        settings = self.settings
        with self._step("connect"):
            context = settings.ssl_context() if settings.security != "none" else None
            client = _Client(
                settings.host,
                settings.port,
                settings.timeout,
                context if settings.security == "ssl" else None,
                self._progress,
                settings.open_socket,
            )
            self._client = client
            welcome = client.getwelcome()
            if not welcome.startswith(b"+OK"):
                raise UnexpectedGreeting("POP3", welcome.decode("utf-8", "replace"))
            self.capabilities = self._capa()
        if settings.security == "starttls":
            with self._step("tls"):
                if "STLS" not in self.capabilities:
                    raise MissingCapability("STLS", "the server does not offer STLS (STARTTLS)")
                assert context is not None
                self.client.stls(context)
                self.capabilities = self._capa()

    def _capa(self) -> dict[str, list[str]]:
        try:
            return self.client.capa()
        except poplib.error_proto:
            return {}  # CAPA is optional (RFC 2449); old servers answer -ERR

    def login(self) -> None:
        assert self._credentials.password is not None
        with self._step("login"):
            if "UTF8" in self.capabilities:
                # RFC 6856: without it, servers such as Courier replace every message with
                # UTF-8 headers by a stand-in ("Cannot display Unicode content").
                with suppress(poplib.error_proto):
                    self.client.utf8()
            self.client.user(self.settings.username)
            self.client.pass_(self._credentials.password)
            if self.capabilities and "UIDL" not in self.capabilities:
                # Without UIDL there is no stable identity: every run would re-import all.
                raise MissingCapability("UIDL", "the server does not offer UIDL")

    def close(self) -> None:
        """QUIT: ends the session cleanly. No DELE was ever sent, so nothing is deleted."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (poplib.error_proto, OSError, EOFError):
            with suppress(OSError):
                client.close()

    def stat(self) -> tuple[int, int]:
        """(message count, mailbox size in octets)."""
        with self._step("stat"):
            return self.client.stat()

    def uidl(self) -> dict[str, int]:
        """Unique id → message number for every message in the maildrop."""
        with self._step("uidl"):
            _, lines, _ = self.client.uidl()
            result: dict[str, int] = {}
            for line in lines:
                match = re.fullmatch(rb"\s*(\d+)\s+(\S+)\s*", line)
                if match is None:
                    raise ProtocolError(f"cannot parse UIDL line {line!r}")
                result[match.group(2).decode("ascii", "replace")] = int(match.group(1))
            return result

    def retrieve(self, number: int, *, peek: bool = False) -> bytes:
        """The raw message (CRLF line ends, dot-stuffing undone).

        RETR makes servers that also offer IMAP (Dovecot, Exchange) mark the message
        \\Seen there. With ``peek`` the whole message is read with ``TOP n <huge>`` instead,
        which leaves flags alone, when the server advertises TOP.
        """
        with self._step("retrieve"):
            if peek and "TOP" in self.capabilities:
                _, lines, _ = self.client.top(number, _WHOLE_BODY)
            else:
                _, lines, _ = self.client.retr(number)
            # poplib strips CRLF and the stuffed leading dot; put the line ends back so the
            # bytes match what IMAP would give for the same message.
            return b"\r\n".join(lines) + b"\r\n" if lines else b""
