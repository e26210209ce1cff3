"""Raw RFC 5322 bytes to the fields the portal keeps, never raising.

Real mail is full of broken headers, charsets and MIME trees. Every extraction step here is
guarded on its own, so a message that breaks one of them is still stored (raw) and flagged
with what went wrong, and one bad message never stops a mailbox.
"""

from __future__ import annotations

import datetime
import email
import email.message
import email.utils
import hashlib
import html
import mimetypes
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from typing import ClassVar

from portal.addresses import normalize_address

__all__ = [
    "ParsedAttachment",
    "ParsedMessage",
    "message_parse",
    "messages_parse",
    "safe_filename",
]

_MSGID = re.compile(r"<([^<>\s]+)>")
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    content: bytes = field(repr=False)
    inline_image: bool = False
    # sha256 of ``content``, hex (computed once here, where the content is decoded).
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.content).hexdigest()


@dataclass
class ParsedMessage:
    key: str
    message_id: str = ""
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    date: datetime.datetime | None = None
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    text: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> set[str]:
        found = {self.from_address, *self.to, *self.cc, *self.reply_to}
        found.discard("")
        return found

    @property
    def thread_key(self) -> str:
        # The thread's root: the first reference, else what it replies to, else itself.
        root = (self.references[:1] or [self.in_reply_to])[0] or self.message_id
        return hashlib.sha256(f"thread:{root or self.key}".encode()).hexdigest()


class _RememberingHeaders(HeaderRegistry):
    """policy.default's header registry, parsing each header value of one message once.

    With policy.default every ``msg.get(name)`` parses the header again, and so does each
    ``get_content_type()``, ``get_param()``, ``get_filename()`` or ``is_attachment()`` (the
    feed parser itself asks each part's Content-Type three times). Header objects are
    immutable, so handing out the one already parsed for the same (name, value) gives the
    same result at about half the parse time. One instance per message: the memory goes
    with the message.

    Address headers are also remembered across messages (at most _SHARED_LIMIT of them per
    process): a mailbox's From, To and Cc values repeat (the member's own address, each
    client's), and the address parser is the most expensive header parser.
    """

    _SHARED = frozenset({"from", "to", "cc", "reply-to", "sender"})
    _SHARED_LIMIT = 2000
    _shared: ClassVar[dict[tuple[str, str], object]] = {}

    # HeaderRegistry builds a new class on every lookup; the class only depends on the
    # registered class, so build each once per process.
    _classes: ClassVar[dict[type, type]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._parsed: dict[tuple[str, str], object] = {}

    def __getitem__(self, name: str) -> type:
        registered = self.registry.get(name.lower(), self.default_class)
        made = self._classes.get(registered)
        if made is None:
            made = type("_" + registered.__name__, (registered, self.base_class), {})
            self._classes[registered] = made
        return made

    def __call__(self, name: str, value: str) -> object:
        key = (name, value)
        header = self._parsed.get(key)
        if header is None:
            shared = name.lower() in self._SHARED
            header = self._shared.get(key) if shared else None
            if header is None:
                header = self[name](name, value)
                if shared:
                    if len(self._shared) >= self._SHARED_LIMIT:
                        self._shared.clear()  # simpler than LRU; refills in a few messages
                    self._shared[key] = header
            self._parsed[key] = header
        return header


# A MIME-structural header value whose answers policy.default gives exactly as the compat32
# helpers give them on the raw value: printable ASCII (no undecodable bytes to sanitize), no
# encoded word (decoded by policy.default even inside quotes), and the plain grammar
#   token "/" token *(";" attribute "=" (value-token / quoted-string)) [";"]   (Content-Type)
#   token *(";" attribute "=" (value-token / quoted-string)) [";"]   (Content-Disposition)
# with spaces or tabs around the separators; no comments, no quoted pairs, no RFC 2231 "*"
# parameters, and inside quotes neither ";" nor leading, trailing or repeated spaces (which
# policy.default's parameter values would fold). policy.default turns such a value into
#   <the raw text before the first ";"> [";" *(" " attribute '="' value '"' ";")]
# (each parameter name only once, first wins, quotes always) and the ``Message`` methods then
# apply the compat32 helpers (_splitparam, _parseparam, decode_params, unquote) to that
# string. On the raw value those helpers give the same type, the same disposition and, for
# every name, the same first parameter value. tests/mailsync/test_parsing_same_result.py
# checks this on every such value of the conformance corpus and of the benchmark's mail.
_WS = r"[ \t]*"
_TYPE_WORD = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"  # RFC 2045 token: ttext
_ATTRIBUTE = r"[!#$&+\-.0-9A-Z^_`a-z{|}~]+"  # ttext without * ' %
_VALUE_WORD = r"[!#$%&+\-.0-9A-Z^_`a-z{|}~]+"  # ttext without * '
_QTEXT = r"[!#-:<-\[\]-~]+"  # printable ASCII without space " ; \
_QUOTED = rf'"{_QTEXT}(?: {_QTEXT})*"'
_PARAMETERS = rf"(?:{_WS};{_WS}{_ATTRIBUTE}={_WS}(?:{_VALUE_WORD}|{_QUOTED}))*{_WS};?{_WS}"
_PLAIN_STRUCTURAL = {
    "content-type": re.compile(rf"{_WS}{_TYPE_WORD}/{_TYPE_WORD}{_PARAMETERS}"),
    "content-disposition": re.compile(rf"{_WS}{_TYPE_WORD}{_PARAMETERS}"),
}
_NEEDS_PARSER = object()  # marker: only policy.default's header object gives the right answer
_LINESEP = re.compile(r"\n|\r")  # what policy.default's header_fetch_parse removes


class _StructuralMessage(EmailMessage):
    """``EmailMessage`` that answers the Content-Type and Content-Disposition questions the
    feed parser and ``message_parse`` ask (type, disposition, boundary, file name, charset)
    from the raw header value, where that provably gives policy.default's answer.

    policy.default parses these headers into header objects on every access, and the
    ``Message`` methods then use only ``str()`` of that object with the compat32 helpers. For
    a ``_PLAIN_STRUCTURAL`` value the helpers give the same answers on the raw value without
    building the object. Any other value (encoded words, RFC 2231, comments, 8-bit bytes,
    odd syntax) and every other question go through policy.default unchanged.
    """

    def _plain_structural(self, name: str) -> object:
        """The first ``name`` header's unfolded raw value, None if absent, or _NEEDS_PARSER."""
        for key, value in self._headers:
            if key.lower() == name:
                if type(value) is not str:  # a header object set through the API
                    return _NEEDS_PARSER
                plain = _plain_structural_value(name, "".join(_LINESEP.split(value)))
                return _NEEDS_PARSER if plain is None else plain
        return None

    def get_content_type(self) -> str:
        value = self._plain_structural("content-type")
        if value is _NEEDS_PARSER:
            return super().get_content_type()
        if value is None:
            return self.get_default_type()
        ctype = email.message._splitparam(value)[0].lower()
        return ctype if ctype.count("/") == 1 else "text/plain"

    def get_content_disposition(self) -> str | None:
        value = self._plain_structural("content-disposition")
        if value is _NEEDS_PARSER:
            return super().get_content_disposition()
        return None if value is None else email.message._splitparam(value)[0].lower()

    def is_attachment(self) -> bool:
        value = self._plain_structural("content-disposition")
        if value is _NEEDS_PARSER:
            return super().is_attachment()
        # ContentDispositionHeader.content_disposition: the first token, stripped, lowered.
        return value is not None and email.message._splitparam(value)[0].lower() == "attachment"

    def get_param(
        self,
        param: str,
        failobj: object = None,
        header: str = "content-type",
        unquote: bool = True,
    ) -> object:
        # Message.get_param, with Message._get_params_preserve on the raw value.
        name = header.lower()
        value = self._plain_structural(name) if name in _PLAIN_STRUCTURAL else _NEEDS_PARSER
        if value is _NEEDS_PARSER:
            return super().get_param(param, failobj, header, unquote)
        if value is None:
            return failobj
        params = []
        for item in email.message._parseparam(value):
            key, equals, val = item.partition("=")
            params.append((key.strip(), val.strip()) if equals else (item.strip(), ""))
        param = param.lower()
        for key, val in email.utils.decode_params(params):
            if key.lower() == param:
                return email.message._unquotevalue(val) if unquote else val
        return failobj


def _plain_structural_value(name: str, value: str) -> str | None:
    """``value`` (unfolded) if policy.default's parser would give it back unchanged."""
    if "=?" not in value and _PLAIN_STRUCTURAL[name].fullmatch(value):
        return value
    return None


def _policy() -> policy.EmailPolicy:
    return policy.default.clone(
        header_factory=_RememberingHeaders(), message_factory=_StructuralMessage
    )


def _clean(text: str) -> str:
    """Text safe to store: undecodable bytes (kept by the email package as surrogates)
    become U+FFFD, and NULs go (PostgreSQL text cannot hold them)."""
    if not text.isascii():
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # lone UTF-16 surrogates from a broken encoded-word
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text.replace("\x00", "")


def normalize_message_id(value: str) -> str:
    match = _MSGID.search(value or "")
    text = match.group(1) if match else (value or "").strip().strip("<>")
    return "".join(text.split())


def _ids(value: str) -> list[str]:
    return [match for match in _MSGID.findall(value or "")] or (
        [normalize_message_id(value)] if (value or "").strip() else []
    )


def _raw_header(msg: EmailMessage, name: str) -> list[str]:
    # raw_items() gives header values as sent, without the policy's (fallible) parsing.
    return [str(value) for key, value in msg.raw_items() if key.lower() == name.lower()]


def _text_header(msg: EmailMessage, name: str, errors: list[str]) -> str:
    try:
        value = msg.get(name)
        return "" if value is None else _clean(" ".join(str(value).split()))
    except Exception as exc:
        errors.append(f"{name}: {exc}")
        raw = _raw_header(msg, name)
        return _clean(" ".join(raw[0].split())) if raw else ""


def _normalized(address: str) -> str:
    address = address.strip()
    if address.count("@") != 1 or any(char.isspace() for char in address):
        return ""
    try:
        return normalize_address(address)[:320]
    except Exception:
        return ""


def _addresses(msg: EmailMessage, name: str, errors: list[str]) -> list[tuple[str, str]]:
    try:
        header = msg.get(name)
        if header is None:
            return []
        return [
            (_clean(str(addr.display_name)), _clean(addr.addr_spec))
            for addr in getattr(header, "addresses", ())
        ]
    except Exception as exc:
        errors.append(f"{name}: {exc}")
        return [
            (_clean(display), _clean(addr))
            for display, addr in email.utils.getaddresses(_raw_header(msg, name))
        ]


def _address_list(msg: EmailMessage, name: str, errors: list[str]) -> list[str]:
    seen: list[str] = []
    for _display, addr in _addresses(msg, name, errors):
        normal = _normalized(addr)
        if normal and normal not in seen:
            seen.append(normal)
    return seen


def safe_filename(name: str | None, content_type: str) -> str:
    """A file name that is safe to show and to offer for download: no directories,
    control or invisible characters, bounded length, with an extension if we can guess one."""
    name = unicodedata.normalize("NFC", _clean(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        char
        for char in name
        if unicodedata.category(char)[0] not in ("C",) and char not in '<>:"|?*'
    ).strip(" .")
    if not name:
        extension = mimetypes.guess_extension(content_type or "") or ".bin"
        name = f"attachment{extension}"
    if len(name) > 150:
        stem, dot, extension = name.rpartition(".")
        name = (stem[:140] + dot + extension[:9]) if dot and len(extension) <= 9 else name[:150]
    return name


def _html_to_text(value: str) -> str:
    return html.unescape(_TAGS.sub(" ", value))


def _body_and_attachments(msg: EmailMessage, parsed: ParsedMessage) -> None:
    body_part = None
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
        if body_part is not None:
            content = body_part.get_content()
            if isinstance(content, bytes):
                content = content.decode("utf-8", "replace")
            if body_part.get_content_subtype() == "html":
                content = _html_to_text(content)
            parsed.text = _clean(content)
    except Exception as exc:
        parsed.errors.append(f"body: {exc}")
    try:
        parts = list(msg.walk())
    except Exception as exc:
        parsed.errors.append(f"structure: {exc}")
        return
    for part in parts:
        if part is body_part or part.is_multipart():
            continue
        try:
            disposition = part.get_content_disposition()
            filename = part.get_filename()
            content_type = part.get_content_type()
            if disposition != "attachment" and not filename:
                continue  # an alternative body or a text part, not a file
            if content_type == "message/rfc822" or part.get_content_maintype() == "message":
                payload = part.as_bytes()
            else:
                payload = part.get_payload(decode=True)
            if payload is None:
                continue
            inline_image = (
                part.get_content_maintype() == "image"
                and disposition != "attachment"
                and bool(part.get("Content-ID"))
            )
            parsed.attachments.append(
                ParsedAttachment(
                    filename=safe_filename(filename, content_type),
                    content_type=content_type[:127],
                    content=payload,
                    inline_image=inline_image,
                )
            )
        except Exception as exc:
            parsed.errors.append(f"attachment: {exc}")


def message_parse(raw: bytes, *, internaldate: datetime.datetime | None = None) -> ParsedMessage:
    """Parse ``raw``; problems are collected in ``errors`` instead of raised."""
    errors: list[str] = []
    try:
        msg = email.message_from_bytes(raw, policy=_policy())
    except Exception as exc:
        return ParsedMessage(
            key=hashlib.sha256(b"raw:" + raw).hexdigest(),
            date=internaldate,
            errors=[f"message: {exc}"],
        )
    assert isinstance(msg, EmailMessage)
    message_id = normalize_message_id(_text_header(msg, "Message-ID", errors))[:900]
    parsed = ParsedMessage(key="", message_id=message_id, errors=errors)
    parsed.subject = _text_header(msg, "Subject", errors)[:2000]
    senders = _addresses(msg, "From", errors)
    if senders:
        parsed.from_name = senders[0][0][:200]
        parsed.from_address = _normalized(senders[0][1])
    parsed.to = _address_list(msg, "To", errors)
    parsed.cc = _address_list(msg, "Cc", errors)
    parsed.reply_to = _address_list(msg, "Reply-To", errors)
    parsed.in_reply_to = normalize_message_id(_text_header(msg, "In-Reply-To", errors))
    parsed.references = _ids(_text_header(msg, "References", errors))[:50]
    try:
        header = msg.get("Date")
        parsed.date = getattr(header, "datetime", None) if header is not None else None
        if parsed.date is not None and parsed.date.tzinfo is None:
            parsed.date = parsed.date.replace(tzinfo=datetime.UTC)
    except Exception as exc:
        errors.append(f"Date: {exc}")
    parsed.date = parsed.date or internaldate
    for defect in getattr(msg, "defects", [])[:5]:
        errors.append(f"defect: {type(defect).__name__}")
    _body_and_attachments(msg, parsed)
    # Exception texts and header leftovers may still carry undecodable bytes.
    parsed.errors = [_clean(error) for error in parsed.errors]
    parsed.references = [_clean(ref) for ref in parsed.references]
    parsed.in_reply_to = _clean(parsed.in_reply_to)
    for attachment in parsed.attachments:
        attachment.content_type = _clean(attachment.content_type)
    if message_id:
        parsed.key = hashlib.sha256(f"mid:{message_id}".encode()).hexdigest()
    else:
        # No Message-ID: the same message seen in two mailboxes differs in its trace
        # headers, so hash what the sender wrote rather than the raw bytes.
        basis = "\n".join(
            [
                parsed.date.isoformat() if parsed.date else "",
                parsed.from_address,
                ",".join(parsed.to),
                parsed.subject,
                parsed.text,
            ]
        )
        if not parsed.text and not parsed.subject:
            basis += hashlib.sha256(raw).hexdigest()
        parsed.key = hashlib.sha256(f"content:{_clean(basis)}".encode()).hexdigest()
    return parsed


# --- the sync engine's parse process (see mailsync.engine.BatchParser) ----------------------
# It imports this module only (no Django set-up), so everything it runs lives here.


def parse_process_init(parent_pid: int) -> None:
    """Start-up of a parse process: exit as soon as the sync process that started it is gone.

    A sync worker can be killed outright (OOM killer, SIGKILL on deploy); its parse process
    would otherwise wait for work forever.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def messages_parse(
    items: list[tuple[bytes, datetime.datetime | None]],
) -> tuple[list[ParsedMessage], float]:
    """``message_parse`` for each (raw, internaldate), and the CPU seconds it took."""
    start = time.process_time()
    parsed = [message_parse(raw, internaldate=internaldate) for raw, internaldate in items]
    return parsed, time.process_time() - start
