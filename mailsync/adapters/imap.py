"""A strictly read-only IMAP mailbox.

Reads folders, their UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ and messages, and nothing else: every
folder is opened with EXAMINE (read-only), bodies are fetched with BODY.PEEK, and no command
here stores flags, copies, moves, expunges or deletes. The member's mailbox looks exactly the
same after a sync as before it.

Every failure leaves as a `mailsync.errors.SyncError` carrying the step it happened at.
Pure Python: no Django imports.

One piece (over 500 lines) on purpose: every IMAP command the portal sends is in this file,
so that "no command here writes to the member's mailbox" can be checked by reading one file;
the response parsing (raw imaplib, see README "Dependencies and why") belongs with it.
"""

from __future__ import annotations

import base64
import datetime
import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass

from mailsync.adapters.base import Credentials, FetchedMessage, FolderStatus, ServerSettings
from mailsync.adapters.steps import StepTracking
from mailsync.errors import (
    MissingCapability,
    OAuthLoginRefused,
    ProtocolError,
    UidValidityChanged,
    UnexpectedGreeting,
    clean_reply,
    folder_not_found,
)

__all__ = ["ImapMailbox", "decode_folder_name", "encode_folder_name"]

# Failures a step can meet; anything else is a bug and should surface as itself.
_STEP_ERRORS = (
    imaplib.IMAP4.error,
    OSError,
    EOFError,
    ValueError,
    MissingCapability,
    UnexpectedGreeting,
    ProtocolError,
)

# Where mail clients file sent mail on servers that do not mark the folder \Sent, in the
# order tried (Dovecot and Courier put folders under "INBOX." on many hosts).
SENT_FOLDER_NAMES = ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent", "INBOX.Sent Items")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Dovecot 2.3 says "Mailbox doesn't exist: X" without the RFC 5530 code; others use it.
_MISSING_FOLDER = re.compile(
    rb"\[NONEXISTENT\]|mailbox (doesn't|does not) exist|no such (mailbox|folder)|"
    rb"unknown mailbox",
    re.IGNORECASE,
)

# How many UIDs one metadata FETCH asks for (keeps command lines short: some servers cap
# them around 8 KB, and UIDs are not always contiguous).
_META_CHUNK = 500


# --- folder names (RFC 3501 5.1.3 modified UTF-7) --------------------------------------------


def decode_folder_name(name: bytes | str) -> str:
    """Modified UTF-7 (as IMAP sends folder names) to text; ``&AOk-t&AOk-`` is ``été``."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            # Some servers send raw UTF-8 names despite the RFC; take them as they are.
            return name.decode("utf-8", "replace")
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = name.find("-", i)
        if end == -1:
            raise ValueError(f"unterminated modified UTF-7 in folder name {name!r}")
        if end == i + 1:
            out.append("&")
        else:
            chunk = name[i + 1 : end].replace(",", "/")
            chunk += "=" * (-len(chunk) % 4)
            out.append(base64.b64decode(chunk, validate=True).decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def encode_folder_name(name: str) -> str:
    """Text to modified UTF-7, the inverse of `decode_folder_name`."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _quoted(name: str, *, utf8: bool = False) -> str:
    """A folder name as a command argument: modified UTF-7, or UTF-8 itself once the session
    has enabled UTF8=ACCEPT (RFC 6855 3: then the server takes and sends UTF-8 names only)."""
    encoded = name if utf8 else encode_folder_name(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- response parsing ------------------------------------------------------------------------

_LIST_LINE = re.compile(
    rb'^\((?P<flags>[^)]*)\)\s+(?P<delim>"(?:\\.|[^"\\])*"|NIL)\s+(?P<name>.*)$',
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(
    rb"""\s*(?:
        (?P<open>\()|(?P<close>\))
        |"(?P<quoted>(?:\\.|[^"\\])*)"
        |\x00(?P<literal>\d+)\x00
        |(?P<atom>[^\s()"\[\]\x00]+(?:\[[^\]]*\])?(?:<\d+>)?)
    )""",
    re.VERBOSE,
)


def _unquote(value: bytes) -> bytes:
    return re.sub(rb"\\(.)", rb"\1", value)


def _parse_list_line(
    item: bytes | tuple[bytes, bytes], *, utf8: bool = False
) -> tuple[set[str], str] | None:
    if isinstance(item, tuple):
        head, name = item[0], item[1]
        match = _LIST_LINE.match(head.rstrip() + b" x")
    else:
        match = _LIST_LINE.match(item)
        name = match.group("name").strip() if match else b""
        if name.startswith(b'"') and name.endswith(b'"'):
            name = _unquote(name[1:-1])
    if match is None:
        return None
    flags = {flag.decode("ascii", "replace").lower() for flag in match.group("flags").split()}
    return flags, name.decode("utf-8", "replace") if utf8 else decode_folder_name(name)


def _tokens(text: bytes, literals: Sequence[bytes]) -> list[object]:
    """IMAP data to nested lists of bytes; literals come back as their bytes."""
    stack: list[list[object]] = [[]]
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == b"":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ProtocolError(f"cannot parse FETCH response near {text[pos : pos + 40]!r}")
        pos = match.end()
        if match.group("open"):
            stack.append([])
        elif match.group("close"):
            if len(stack) == 1:
                raise ProtocolError("unbalanced ')' in FETCH response")
            done = stack.pop()
            stack[-1].append(done)
        elif match.group("quoted") is not None:
            stack[-1].append(_unquote(match.group("quoted")))
        elif match.group("literal") is not None:
            stack[-1].append(literals[int(match.group("literal"))])
        else:
            stack[-1].append(match.group("atom"))
    if len(stack) != 1:
        raise ProtocolError("unbalanced '(' in FETCH response")
    return stack[0]


def _fetch_items(data: Iterable[object]) -> Iterator[dict[str, object]]:
    """imaplib's FETCH data (bytes and (head, literal) tuples) to one dict per message."""
    groups: list[tuple[bytearray, list[bytes]]] = []
    after_literal = False
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            head, literal = item[0], item[1]
            if not after_literal or not groups:
                groups.append((bytearray(), []))
            text, literals = groups[-1]
            # Swap the "{123}" that announced the literal for a marker the tokenizer knows.
            text += re.sub(rb"\{\d+\+?\}\s*$", f"\x00{len(literals)}\x00".encode(), head)
            literals.append(literal)
            after_literal = True
        else:
            assert isinstance(item, bytes)
            if after_literal and groups:
                groups[-1][0].extend(item)
            else:
                groups.append((bytearray(item), []))
            after_literal = False
    for text, literals in groups:
        tokens = _tokens(bytes(text), literals)
        # "<seq> (KEY value KEY value ...)"
        if len(tokens) < 2 or not isinstance(tokens[1], list):
            continue
        pairs = tokens[1]
        item_map: dict[str, object] = {}
        for key, value in zip(pairs[::2], pairs[1::2], strict=False):
            if isinstance(key, bytes):
                item_map[key.decode("ascii", "replace").upper()] = value
        yield item_map


def _parse_internaldate(value: object) -> datetime.datetime | None:
    if not isinstance(value, bytes):
        return None
    # e.g. "17-Jul-1996 02:44:25 -0700" (day may be space-padded); no strptime("%b"),
    # which depends on the process locale.
    match = re.match(
        rb"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", value
    )
    if not match:
        return None
    day, month, year, hour, minute, second, sign, tz_h, tz_m = match.groups()
    try:
        month_number = _MONTHS.index(month.decode().capitalize()) + 1
    except ValueError:
        return None
    offset = datetime.timedelta(hours=int(tz_h), minutes=int(tz_m))
    if sign == b"-":
        offset = -offset
    return datetime.datetime(
        int(year),
        month_number,
        int(day),
        int(hour),
        int(minute),
        int(second),
        tzinfo=datetime.timezone(offset),
    )


def _imap_date(value: datetime.date) -> str:
    return f"{value.day}-{_MONTHS[value.month - 1]}-{value.year}"


@dataclass(frozen=True)
class _Meta:
    uid: int
    size: int
    internaldate: datetime.datetime | None
    flags: frozenset[str]


def _meta_of(item: dict[str, object]) -> _Meta | None:
    uid = item.get("UID")
    if not isinstance(uid, bytes) or not uid.isdigit():
        return None  # an unsolicited FETCH (e.g. another client changed flags)
    size = item.get("RFC822.SIZE")
    flags = item.get("FLAGS")
    return _Meta(
        uid=int(uid),
        size=int(size) if isinstance(size, bytes) and size.isdigit() else 0,
        internaldate=_parse_internaldate(item.get("INTERNALDATE")),
        flags=frozenset(
            flag.decode("ascii", "replace") for flag in flags if isinstance(flag, bytes)
        )
        if isinstance(flags, list)
        else frozenset(),
    )


def _body_of(item: dict[str, object]) -> bytes | None:
    for key, value in item.items():
        if key.startswith("BODY[") and isinstance(value, bytes):
            return value
    return None


# --- the connection --------------------------------------------------------------------------


class _Client(imaplib.IMAP4):
    """imaplib with explicit TLS, progress reporting and a readable wrong-protocol error."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        implicit_tls: ssl.SSLContext | None,
        progress: Callable[[str], None],
        open_socket: Callable[[float | None], socket.socket],
    ) -> None:
        self._implicit_tls = implicit_tls
        self._progress = progress
        self._open_socket = open_socket
        self._first_line: bytes | None = None
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None):  # type: ignore[override]
        # Never imaplib's own create_connection(host): a second DNS lookup (rebinding).
        sock = self._open_socket(timeout)
        if self._implicit_tls is None:
            return sock
        self._progress("tls")
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()  # imaplib would leak the plain socket
            raise

    def _get_line(self) -> bytes:
        line = super()._get_line()
        if self._first_line is None:
            self._first_line = line
        return line

    def _connect(self) -> None:
        try:
            super()._connect()
        except TimeoutError as exc:
            if self._first_line is None:
                # Connected, but the server said nothing: typically a plain connection to an
                # implicit-TLS port (993), where the server waits for our TLS hello.
                raise UnexpectedGreeting("IMAP", "") from exc
            raise
        except imaplib.IMAP4.error as exc:
            first = self._first_line or b""
            if not first.startswith(b"* "):
                greeting = first.decode("utf-8", "replace").strip()
                raise UnexpectedGreeting("IMAP", greeting) from exc
            raise


class ImapMailbox(StepTracking):
    """A read-only IMAP session. Use as a context manager::

        with ImapMailbox(settings, credentials) as box:
            for uid in box.fetch_uids_since("INBOX", last_uid): ...

    ``fetch`` sends messages in batches of at most ``batch_bytes`` (a larger message comes
    alone) and ``batch_count`` messages, so memory stays bounded by the largest message.
    """

    step_errors = _STEP_ERRORS

    def __init__(
        self,
        settings: ServerSettings,
        credentials: Credentials,
        *,
        batch_bytes: int = 8 * 1024 * 1024,
        batch_count: int = 100,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self.batch_bytes = batch_bytes
        self.batch_count = batch_count
        self.step = "connect"
        self.capabilities: frozenset[str] = frozenset()
        self._client: _Client | None = None
        self._examined: str | None = None
        self._uidvalidity: int | None = None
        # True once the server accepted ENABLE UTF8=ACCEPT (RFC 6855).
        self.utf8 = False

    # --- errors --------------------------------------------------------------------------

    @staticmethod
    def _ok(typ: str, data: list) -> list:
        if typ != "OK":
            raise imaplib.IMAP4.error(data[-1] if data else typ)
        return data

    @property
    def client(self) -> _Client:
        if self._client is None:
            raise RuntimeError("not connected: use `with ImapMailbox(...)` or call open()")
        return self._client

    # --- session -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (TCP, implicit TLS or STARTTLS) without logging in."""
        settings = self.settings
        with self._step("connect"):
            context = settings.ssl_context() if settings.security != "none" else None
            self._client = _Client(
                settings.host,
                settings.port,
                settings.timeout,
                context if settings.security == "ssl" else None,
                self._progress,
                settings.open_socket,
            )
            self._read_capabilities(self._client.capabilities)
        if settings.security == "starttls":
            with self._step("tls"):
                if "STARTTLS" not in self.capabilities:
                    raise MissingCapability("STARTTLS", "the server does not offer STARTTLS")
                assert context is not None
                self._ok(*self.client.starttls(context))
                self._read_capabilities(self.client.capabilities)

    def login(self) -> None:
        username = self.settings.username
        creds = self._credentials
        with self._step("login"):
            client = self.client
            if creds.access_token is not None:
                if "AUTH=XOAUTH2" not in self.capabilities:
                    raise MissingCapability("AUTH=XOAUTH2", "the server does not offer XOAUTH2")
                self._xoauth2(client, username)
            else:
                assert creds.password is not None
                if creds.password.isascii() and username.isascii():
                    self._ok(*client.login(username, creds.password))
                else:
                    # LOGIN only carries ASCII; SASL PLAIN carries UTF-8.
                    secret = f"\0{username}\0{creds.password}".encode()
                    self._ok(*client.authenticate("PLAIN", lambda _challenge: secret))
            # Servers add capabilities after login (Dovecot: CONDSTORE, ...).
            typ, data = client.capability()
            self._ok(typ, data)
            if data and isinstance(data[-1], bytes):
                self._read_capabilities(tuple(data[-1].decode("ascii", "replace").split()))
        self._enable_utf8()

    def _enable_utf8(self) -> None:
        """Ask for UTF-8 where the server offers it (RFC 6855). Without it, servers such as
        Courier hand an internationalised message (UTF-8 headers) to a client as a stand-in
        saying it cannot be shown, and the real message never reaches the portal."""
        if "UTF8=ACCEPT" not in self.capabilities or "ENABLE" not in self.capabilities:
            return
        with self._step("login"):
            # imaplib checks its own copy of the capabilities, read before login.
            self.client.capabilities = tuple(sorted(self.capabilities))
            try:
                typ, _data = self.client.enable("UTF8=ACCEPT")
            except imaplib.IMAP4.error:
                return  # refused: the session goes on in the classic mode
            self.utf8 = typ == "OK"

    def _xoauth2(self, client: _Client, username: str) -> None:
        initial = self._credentials.xoauth2(username)
        sent: list[bool] = []
        refusals: list[bytes] = []

        def respond(challenge: bytes) -> bytes:
            if not sent:
                sent.append(True)
                return initial
            # A second challenge is the server's JSON error; answer empty to get the NO.
            refusals.append(challenge)
            return b""

        try:
            client.authenticate("XOAUTH2", respond)
        except imaplib.IMAP4.error as exc:
            reason = refusals[-1].decode("utf-8", "replace") if refusals else ""
            raise OAuthLoginRefused(
                f"{clean_reply(exc.args[0]) if exc.args else ''} {reason}".strip(),
                token_refused=bool(refusals),
            ) from exc

    def _read_capabilities(self, capabilities: Iterable[str]) -> None:
        self.capabilities = frozenset(cap.upper() for cap in capabilities)

    def close(self) -> None:
        """LOGOUT (never CLOSE, which would expunge in a read-write session)."""
        client, self._client = self._client, None
        self._examined = None
        if client is None:
            return
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError, EOFError):
            # Already broken: make sure the socket is gone, there is nothing to save.
            with suppress(OSError):
                client.shutdown()

    # --- reading -------------------------------------------------------------------------

    def list_folders(self) -> list[str]:
        """Selectable folders, decoded (``INBOX`` first, then alphabetical)."""
        with self._step("list_folders"):
            data = self._ok(*self.client.list())
            names: set[str] = set()
            for item in data:
                if item is None:
                    continue
                parsed = _parse_list_line(item, utf8=self.utf8)
                if parsed is None:
                    raise ProtocolError(f"cannot parse LIST response {item!r}")
                flags, name = parsed
                if "\\noselect" in flags or "\\nonexistent" in flags:
                    continue
                names.add(name)
        return sorted(names, key=lambda name: (name.upper() != "INBOX", name))

    def sent_folder(self) -> str | None:
        """The folder the member's mail client files sent mail in: the one LIST marks
        \\Sent (RFC 6154), else one named as clients commonly name it; None if there is
        none (the portal then files nothing rather than creating a folder)."""
        with self._step("list_folders"):
            data = self._ok(*self.client.list())
            names: dict[str, str] = {}
            for item in data:
                parsed = _parse_list_line(item, utf8=self.utf8) if item is not None else None
                if parsed is None:
                    continue
                flags, name = parsed
                if "\\noselect" in flags or "\\nonexistent" in flags:
                    continue
                if "\\sent" in flags:
                    return name
                names.setdefault(name.lower(), name)
        for candidate in SENT_FOLDER_NAMES:
            if candidate.lower() in names:
                return names[candidate.lower()]
        return None

    def append(
        self, folder: str, raw: bytes, *, seen: bool = True, date: datetime.datetime | None = None
    ) -> None:
        """APPEND ``raw`` to ``folder`` (marked read: the member wrote it)."""
        with self._step("append"):
            when = imaplib.Time2Internaldate(date) if date is not None else None
            self._ok(
                *self.client.append(
                    _quoted(folder, utf8=self.utf8), "(\\Seen)" if seen else None, when, raw
                )
            )

    def status(self, folder: str) -> FolderStatus:
        items = "MESSAGES UIDNEXT UIDVALIDITY"
        if "CONDSTORE" in self.capabilities or "QRESYNC" in self.capabilities:
            items += " HIGHESTMODSEQ"
        with self._step("status"):
            typ, data = self.client.status(_quoted(folder, utf8=self.utf8), f"({items})")
            if typ != "OK":
                self._raise_folder_error(folder, data)
            text = b" ".join(
                part[0] + part[1] if isinstance(part, tuple) else part
                for part in data
                if part is not None
            )
            match = re.search(rb"\(([^()]*)\)\s*$", text)
            if match is None:
                raise ProtocolError(f"cannot parse STATUS response {text!r}")
            fields = match.group(1).split()
            values = {
                key.decode("ascii").upper(): int(value)
                for key, value in zip(fields[::2], fields[1::2], strict=False)
            }
            try:
                return FolderStatus(
                    name=folder,
                    uidvalidity=values["UIDVALIDITY"],
                    uidnext=values["UIDNEXT"],
                    messages=values["MESSAGES"],
                    highestmodseq=values.get("HIGHESTMODSEQ"),
                )
            except KeyError as exc:
                raise ProtocolError(f"STATUS response lacks {exc.args[0]}: {text!r}") from exc

    def _raise_folder_error(self, folder: str, data: list) -> None:
        reply = data[-1] if data else b""
        if isinstance(reply, bytes) and _MISSING_FOLDER.search(reply):
            raise folder_not_found(folder, reply, step=self.step)
        raise imaplib.IMAP4.error(reply)

    @property
    def examined_uidvalidity(self) -> int | None:
        """UIDVALIDITY of the folder this session has open (None: none open)."""
        return self._uidvalidity if self._examined is not None else None

    def _examine(self, folder: str, uidvalidity: int | None) -> None:
        """Open ``folder`` read-only; refuse if its UIDVALIDITY is not the expected one."""
        if self._examined != folder:
            typ, data = self.client.select(_quoted(folder, utf8=self.utf8), readonly=True)
            if typ != "OK":
                self._raise_folder_error(folder, data)
            _, values = self.client.response("UIDVALIDITY")
            value = values[-1] if values and values[-1] is not None else None
            self._uidvalidity = int(value) if value is not None else None
            self._examined = folder
        if uidvalidity is not None and self._uidvalidity != uidvalidity:
            raise UidValidityChanged(folder, uidvalidity, self._uidvalidity)

    def fetch_uids_since(
        self,
        folder: str,
        after_uid: int,
        *,
        since_date: datetime.date | None = None,
        uidvalidity: int | None = None,
    ) -> list[int]:
        """UIDs greater than ``after_uid`` (ascending), optionally only those that arrived
        on or after ``since_date`` (the server's INTERNALDATE, day precision).

        Give ``uidvalidity`` (from the cursor) to get `UidValidityChanged` instead of UIDs
        that belong to a different numbering.
        """
        with self._step("search"):
            self._examine(folder, uidvalidity)
            criteria = ["UID", f"{after_uid + 1}:*"]
            if since_date is not None:
                criteria += ["SINCE", _imap_date(since_date)]
            data = self._ok(*self.client.uid("SEARCH", *criteria))
            uids = {
                int(token) for chunk in data if chunk for token in chunk.split() if token.isdigit()
            }
        # "N:*" always matches the highest UID, even when it is below N (RFC 3501 6.4.8):
        # an up-to-date folder would otherwise return its last message again and again.
        return sorted(uid for uid in uids if uid > after_uid)

    def fetch(
        self,
        folder: str,
        uids: Iterable[int],
        *,
        max_size: int | None = None,
        uidvalidity: int | None = None,
    ) -> Iterator[FetchedMessage]:
        """The messages with these UIDs, in UID order, as exact raw bytes.

        UIDs that no longer exist are skipped. A message larger than ``max_size`` comes back
        with only its header and ``truncated=True``. Never sets \\Seen (EXAMINE + BODY.PEEK).
        """
        wanted = sorted(set(uids))
        with self._step("fetch"):
            self._examine(folder, uidvalidity)
        for start in range(0, len(wanted), _META_CHUNK):
            chunk = wanted[start : start + _META_CHUNK]
            with self._step("fetch"):
                metas = self._fetch_meta(chunk)
            batch: list[_Meta] = []
            batch_bytes = 0
            for uid in chunk:
                meta = metas.get(uid)
                if meta is None:
                    continue  # expunged since the search
                if max_size is not None and meta.size > max_size:
                    yield from self._fetch_bodies(batch)
                    batch, batch_bytes = [], 0
                    yield from self._fetch_bodies([meta], header_only=True)
                    continue
                full = batch_bytes + meta.size > self.batch_bytes
                if batch and (full or len(batch) >= self.batch_count):
                    yield from self._fetch_bodies(batch)
                    batch, batch_bytes = [], 0
                batch.append(meta)
                batch_bytes += meta.size
            yield from self._fetch_bodies(batch)

    def _fetch_meta(self, uids: Sequence[int]) -> dict[int, _Meta]:
        data = self._ok(
            *self.client.uid("FETCH", _uid_set(uids), "(UID RFC822.SIZE INTERNALDATE FLAGS)")
        )
        wanted = set(uids)
        metas: dict[int, _Meta] = {}
        for item in _fetch_items(data):
            meta = _meta_of(item)
            if meta is not None and meta.uid in wanted:
                metas[meta.uid] = meta
        return metas

    def _fetch_bodies(
        self, metas: Sequence[_Meta], *, header_only: bool = False
    ) -> Iterator[FetchedMessage]:
        if not metas:
            return
        section = "BODY.PEEK[HEADER]" if header_only else "BODY.PEEK[]"
        by_uid = {meta.uid: meta for meta in metas}
        with self._step("fetch"):
            data = self._ok(
                *self.client.uid(
                    "FETCH",
                    _uid_set(sorted(by_uid)),
                    f"(UID RFC822.SIZE INTERNALDATE {section})",
                )
            )
            bodies: dict[int, bytes] = {}
            for item in _fetch_items(data):
                meta = _meta_of(item)
                body = _body_of(item)
                if meta is not None and meta.uid in by_uid and body is not None:
                    bodies[meta.uid] = body
            del data  # let the batch's bytes go as the caller consumes the messages
        for uid in sorted(bodies):
            meta = by_uid[uid]
            raw = bodies.pop(uid)
            yield FetchedMessage(
                uid=uid,
                raw=raw,
                size=meta.size,
                internaldate=meta.internaldate,
                flags=meta.flags,
                truncated=header_only,
            )


def _uid_set(uids: Sequence[int]) -> str:
    """Compact UID set: 1,2,3,7,8 -> "1:3,7:8"."""
    parts: list[str] = []
    ordered = sorted(uids)
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)
