"""Plain data shared by the mailbox adapters. Pure Python: no Django imports."""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass, field
from typing import Literal

from mailsync.netguard import DEFAULT_GUARD, Guard, connect

Security = Literal["ssl", "starttls", "none"]
SECURITY_CHOICES: tuple[Security, ...] = ("ssl", "starttls", "none")


@dataclass(frozen=True)
class ServerSettings:
    """Where and how to reach one server (IMAP, POP3 or SMTP).

    ``ca_file`` trusts an extra CA (a company's own, or a test's self-signed certificate);
    certificates are always verified, including the host name. ``guard`` decides which
    addresses may be connected to (public ones only, unless the operator allows private).
    """

    host: str
    port: int
    security: Security
    username: str
    timeout: float = 30.0
    ca_file: str | None = None
    guard: Guard = field(default=DEFAULT_GUARD, compare=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}, not {self.security!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive (a blocking socket could hang a worker)")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def open_socket(self, timeout: float | None = None) -> socket.socket:
        """A TCP connection to the checked address of ``host`` (see mailsync.netguard)."""
        wait = self.timeout if timeout is None else timeout
        return connect(self.host, self.port, wait, self.guard)


@dataclass(frozen=True)
class Credentials:
    """A password, or an OAuth2 access token used with SASL XOAUTH2 (Gmail, Microsoft).

    Never printed: ``repr`` hides both values so they cannot end up in logs or tracebacks.
    """

    password: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.password is None) == (self.access_token is None):
            raise ValueError("give exactly one of password or access_token")

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(value for value in (self.password, self.access_token) if value)

    def xoauth2(self, username: str) -> bytes:
        """The XOAUTH2 initial client response (before base64), as Google and Microsoft
        document it."""
        if self.access_token is None:
            raise ValueError("no access token")
        return f"user={username}\x01auth=Bearer {self.access_token}\x01\x01".encode()


@dataclass(frozen=True)
class FolderStatus:
    name: str
    uidvalidity: int
    uidnext: int
    messages: int
    # Only when the server offers CONDSTORE; lets the engine skip an unchanged folder.
    highestmodseq: int | None = None


@dataclass(frozen=True)
class FetchedMessage:
    """One message as the server stores it.

    ``raw`` is the exact RFC 5322 bytes (CRLF line ends), unless ``truncated``: then the
    message was larger than the caller's ``max_size`` and ``raw`` holds only its header,
    so the engine can still record and flag it instead of losing it silently.
    """

    uid: int
    raw: bytes = field(repr=False)
    size: int
    internaldate: datetime.datetime | None = None
    flags: frozenset[str] = frozenset()
    truncated: bool = False
