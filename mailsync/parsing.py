"""Raw RFC 5322 bytes to the fields the portal keeps, never raising.

Real mail is full of broken headers, charsets and MIME trees. Every extraction step here is
guarded on its own, so a message that breaks one of them is still stored (raw) and flagged
with what went wrong, and one bad message never stops a mailbox.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime
import email
import email.feedparser
import email.message
import email.parser
import email.utils
import functools
import hashlib
import html
import mimetypes
import os
import re
import threading
import time
import types
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
    "bytes_decode",
    "charset_codec",
    "header_decode",
    "message_key",
    "message_parse",
    "messages_parse",
    "safe_filename",
    "sender_fingerprint",
    "text_snippet",
]

# Bounds on what one message may cost to parse (the raw bytes are always kept whole).
# policy.default's header parser needs memory growing with the square of a value's length
# (a 70,000-character Subject of encoded words: 110 MB; 140,000: 450 MB), so each header
# value is read up to HEADER_MAX_CHARS (16,384 characters: about 400 addresses, 7 MB).
HEADER_MAX_CHARS = 16 * 1024
# The MIME parser holds about 1.5 KB per part: past this many boundary lines the message's
# body is not parsed (its header still is), and past MAX_ATTACHMENTS files none is taken.
MAX_BOUNDARY_LINES = 20_000
MAX_ATTACHMENTS = 1_000
# Parsing nested multiparts costs more than linearly with the depth (800 levels: 0.3 s; the
# stdlib's recursion gives up near 1,500 after 0.25 s). Mail nests a few levels, a long MIME
# digest a few dozen: past this many multipart sections the body is not parsed.
MAX_MULTIPARTS = 250

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
    # Where ``date`` came from when the message has no (readable) Date: "server" (IMAP
    # INTERNALDATE), "received" (the newest Received header, POP3), "none"; "" = Date.
    date_source: str = ""
    # sha256 of what the sender wrote (Date, From, Subject; see sender_fingerprint).
    fingerprint: str = ""

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
        # "name: length" of each header value cut to HEADER_MAX_CHARS before parsing.
        self.cut: list[str] = []

    def __getitem__(self, name: str) -> type:
        registered = self.registry.get(name.lower(), self.default_class)
        made = self._classes.get(registered)
        if made is None:
            made = type("_" + registered.__name__, (registered, self.base_class), {})
            self._classes[registered] = made
        return made

    def __call__(self, name: str, value: str) -> object:
        if len(value) > HEADER_MAX_CHARS:
            self.cut.append(f"{name}: {len(value)}")
            value = _header_cut(value)
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


def _first_raw(msg: email.message.Message, name: str) -> object:
    """The first ``name`` header's value as policy.default hands it to its header class
    (unfolded); None if absent; _NEEDS_PARSER for a header object set through the API."""
    lower = name.lower()
    for key, value in msg._headers:
        if key.lower() == lower:
            return "".join(_LINESEP.split(value)) if type(value) is str else _NEEDS_PARSER
    return None


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
        value = _first_raw(self, name)
        if type(value) is not str:
            return value
        plain = _plain_structural_value(name, value)
        return _NEEDS_PARSER if plain is None else plain

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


def _header_cut(value: str) -> str:
    """``value`` cut to HEADER_MAX_CHARS, at its last comma (address and ID lists) or white
    space there, so that what is read is whole items."""
    head = value[:HEADER_MAX_CHARS]
    for separator in (",", " "):
        end = head.rfind(separator)
        if end > HEADER_MAX_CHARS // 2:
            return head[:end]
    return head


def _policy(headers: _RememberingHeaders | None = None) -> policy.EmailPolicy:
    return policy.default.clone(
        header_factory=headers or _RememberingHeaders(), message_factory=_StructuralMessage
    )


# --- charsets as mail clients read them -------------------------------------------------------
# Labels map to decoders as the WHATWG Encoding Standard's label table does (what browsers and
# Thunderbird use), keyed here by the label with everything but letters and digits removed, so
# that "ISO_8859-1", "iso8859-1" and "iso-8859-1" are one label. Labels the table does not
# know fall back to Python's codec of that name (mail clients also read UTF-7 or ISO-2022-KR,
# which the web standard left out), then to "unknown".
_LABEL_GROUPS: dict[str, str] = {
    "utf_8": "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8",
    "cp1252": (
        "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1"
        " iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252"
        " ansix341968 iso646us us"
    ),
    "gb18030": (
        "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030"
        " euc-cn euccn cp936 windows-936 ms936"
    ),
    "big5hkscs": "big5 big5-hkscs cn-big5 csbig5 x-x-big5 cp950 windows-950",
    "cp949": (
        "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601"
        " ksc_5601 windows-949 cp949 uhc"
    ),
    "cp932": "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis cp932",
    "euc_jp": "cseucpkdfmtjapanese euc-jp x-euc-jp",
    "iso2022_jp_ext": "csiso2022jp iso-2022-jp",
    "cp866": "866 cp866 csibm866 ibm866",
    "iso8859_2": "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 l2 latin2",
    "iso8859_3": "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 l3 latin3",
    "iso8859_4": "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 l4 latin4",
    "iso8859_5": "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso_8859-5",
    "iso8859_6": (
        "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6"
        " iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso_8859-6"
    ),
    "iso8859_7": (
        "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7"
        " iso_8859-7 sun_eu_greek"
    ),
    "iso8859_8": (
        "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8"
        " iso_8859-8 visual csiso88598i iso-8859-8-i logical"
    ),
    "iso8859_10": "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6",
    "iso8859_13": "iso-8859-13 iso8859-13 iso885913",
    "iso8859_14": "iso-8859-14 iso8859-14 iso885914",
    "iso8859_15": "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9 latin9 latin-9",
    "iso8859_16": "iso-8859-16",
    "koi8_r": "cskoi8r koi koi8 koi8-r koi8_r",
    "koi8_u": "koi8-ru koi8-u",
    "mac_roman": "csmacintosh mac macintosh x-mac-roman",
    "mac_cyrillic": "x-mac-cyrillic x-mac-ukrainian",
    "cp874": "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
    "cp1250": "cp1250 windows-1250 x-cp1250",
    "cp1251": "cp1251 windows-1251 x-cp1251",
    "cp1253": "cp1253 windows-1253 x-cp1253",
    "cp1254": (
        "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 l5 latin5"
        " windows-1254 x-cp1254"
    ),
    "cp1255": "cp1255 windows-1255 x-cp1255",
    "cp1256": "cp1256 windows-1256 x-cp1256",
    "cp1257": "cp1257 windows-1257 x-cp1257",
    "cp1258": "cp1258 windows-1258 x-cp1258",
    "utf_16_le": "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le",
    "utf_16_be": "unicodefffe utf-16be",
}
_NOT_LABEL = re.compile(r"[^0-9a-z]")
_CODECS: dict[str, str] = {
    _NOT_LABEL.sub("", label): codec
    for codec, labels in _LABEL_GROUPS.items()
    for label in labels.split()
}
# Codecs whose text can be all ASCII bytes and still not be ASCII text.
_ASCII_UNSAFE = ("utf_16", "utf_7", "iso2022", "hz")


def _c1_as_latin1(error: UnicodeDecodeError) -> tuple[str, int]:
    # WHATWG windows-1252 maps the five bytes Python's cp1252 leaves undefined to U+0081...
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("mailsync-c1", _c1_as_latin1)


@functools.lru_cache(maxsize=512)
def charset_codec(label: str | None) -> str | None:
    """The Python codec a mail client would decode ``label`` with, or None if unknown."""
    squashed = _NOT_LABEL.sub("", (label or "").strip().strip("\"'").lower())
    if not squashed:
        return None
    if squashed in _CODECS:
        return _CODECS[squashed]
    try:
        info = codecs.lookup(label.strip().strip("\"'"))  # type: ignore[union-attr]
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name.replace("-", "_")


def bytes_decode(data: bytes, label: str | None) -> tuple[str, str]:
    """``data`` as text the way a mail client shows it, and "" or what went wrong.

    The declared charset (through the WHATWG labels) first; where it fails, UTF-8 if the
    bytes are valid UTF-8 (a mislabelled part), else the declared charset with U+FFFD for
    what it cannot read (reported). No or an unknown label: UTF-8, else windows-1252.
    """
    codec = charset_codec(label)
    if data.isascii() and not (codec and codec.startswith(_ASCII_UNSAFE)):
        return data.decode("ascii"), ""
    if codec and codec != "ascii":
        try:
            return data.decode(codec), ""
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        pass
    if codec is None or codec in ("cp1252", "ascii"):
        problem = "" if codec else f"unknown charset {label!r}: read as windows-1252"
        return data.decode("cp1252", "mailsync-c1"), problem if label else ""
    text = data.decode(codec, "replace")
    return text, f"charset {label}: {text.count(chr(0xFFFD))} characters could not be read"


_SURROGATES = re.compile(r"[\udc80-\udcff]+")


def _raw_bytes_text(match: re.Match[str]) -> str:
    # 8-bit bytes the email package kept as surrogates: UTF-8 when valid, else windows-1252.
    data = match.group().encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "mailsync-c1")


# Spaces inside the encoded text are not allowed, but mailers write them and clients read them.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t]*")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _encoded_word_bytes(encoding: str, text: str) -> bytes | None:
    try:
        if encoding in "bB":
            data = text.encode("ascii")
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        data = text.replace("_", " ").encode("ascii")
        return _Q_ESCAPE.sub(lambda match: bytes([int(match.group(1), 16)]), data)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return None


def header_decode(value: str) -> str:
    """A raw header value (as ``raw_items`` gives it) as text: unfolded, RFC 2047 encoded
    words decoded with the client charset table (adjacent words of one charset joined
    before decoding, so a character split between two words survives), 8-bit bytes read
    as UTF-8 when valid, else windows-1252."""
    value = "".join(_LINESEP.split(value))
    if "=?" not in value:
        return _SURROGATES.sub(_raw_bytes_text, value) if not value.isascii() else value
    out: list[str] = []
    pending: tuple[str, bytearray] | None = None  # charset, bytes of adjacent words
    position = 0

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            out.append(bytes_decode(bytes(pending[1]), pending[0])[0])
            pending = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        data = _encoded_word_bytes(match.group(2), match.group(3))
        if data is None:
            continue  # left as written (part of the next ``between``)
        charset = match.group(1).partition("*")[0]
        if pending is not None and _BETWEEN_WORDS.fullmatch(between):
            if pending[0].lower() == charset.lower():
                pending[1].extend(data)
            else:
                flush()
                pending = (charset, bytearray(data))
        else:
            flush()
            out.append(_SURROGATES.sub(_raw_bytes_text, between))
            pending = (charset, bytearray(data))
        position = match.end()
    flush()
    out.append(_SURROGATES.sub(_raw_bytes_text, value[position:]))
    return "".join(out)


def _clean(text: str) -> str:
    """Text safe to store: raw 8-bit bytes (kept by the email package as surrogates) read
    as UTF-8 when valid, else windows-1252 (as mail clients show them), and NULs go
    (PostgreSQL text cannot hold them)."""
    if not text.isascii():
        try:
            # Text with no surrogate at all encodes: nothing to replace. Asked first, as the
            # scan for surrogates cost ten times the encoding on every non-ASCII body.
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATES.sub(_raw_bytes_text, text)
            try:
                text.encode("utf-8")
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


# A header value for which policy.default's header object provably says back the value
# itself (its ``str()``), so the object need not be built: printable ASCII (tabs of folds
# too) with neither an encoded word nor a value cut to HEADER_MAX_CHARS. For an
# unstructured header (In-Reply-To, References) ``get_unstructured`` splits such a value
# into white space and words and joins them again unchanged; a Message-ID only when it is
# one plain "<dot-atom@dot-atom>" (the msg-id parser keeps only the first id of several,
# and reads obsolete forms its own way).
# tests/mailsync/test_parsing_same_result.py compares both ways on every such value of the
# conformance corpus, the benchmark's mail and generated text.
_UNSTRUCTURED = frozenset({"in-reply-to", "references"})
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_MSG_ID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*>")


def _plain_text_header(msg: EmailMessage, name: str) -> str | None:
    """``str(msg.get(name))`` when that is provably the raw value (see _UNSTRUCTURED); None
    when only the header object can say."""
    lower = name.lower()
    if lower not in _UNSTRUCTURED and lower != "message-id":
        return None
    value = _first_raw(msg, name)
    if (
        type(value) is not str
        or len(value) > HEADER_MAX_CHARS
        or not value.isascii()
        or not value.replace("\t", " ").isprintable()  # folds keep their tabs
        or "=?" in value
    ):
        return None
    if lower == "message-id" and not _PLAIN_MSG_ID.fullmatch(value):
        return None
    return value


def _text_header(msg: EmailMessage, name: str, errors: list[str]) -> str:
    plain = _plain_text_header(msg, name)
    if plain is not None:
        return " ".join(plain.split())
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


def _sender_name(msg: EmailMessage, display_name: str) -> str:
    """The From display name; where it holds encoded words, decoded with the client charset
    table (policy.default uses Python's codec for the label: gb2312 for GBK text, latin-1
    for windows-1252)."""
    raw = _raw_header(msg, "From")
    if raw and "=?" in raw[0]:
        name = email.utils.parseaddr(raw[0][:HEADER_MAX_CHARS])[0]
        decoded = _clean(" ".join(header_decode(name).split()))
        if decoded:
            return decoded
    return display_name


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


_META_CHARSET = re.compile(rb"<meta[^>]*charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def _file_name(part: EmailMessage) -> str | None:
    """The file name a mail client shows for ``part``, read from the raw headers: the
    Content-Disposition ``filename`` (its RFC 2231 form first, with continuations and
    charset), else the Content-Type ``name``; RFC 2047 encoded words (also inside quotes)
    and 8-bit bytes decoded with the client charset table."""
    for header, wanted in (("content-disposition", "filename"), ("content-type", "name")):
        raw = _raw_header(part, header)
        if not raw:
            continue
        value = "".join(_LINESEP.split(raw[0]))[:HEADER_MAX_CHARS]
        params = []
        for item in email.message._parseparam(value):
            key, equals, val = item.partition("=")
            params.append((key.strip(), val.strip()) if equals else (item.strip(), ""))
        try:
            decoded = email.utils.decode_params(params)[1:]
        except Exception:  # a malformed RFC 2231 value: the other parameters may still do
            decoded = []
        plain = extended = None
        for key, val in decoded:
            if key.lower() != wanted:
                continue
            if isinstance(val, tuple):
                if extended is None:
                    charset, _language, text = val
                    data = email.utils.unquote(text).encode("latin-1", "surrogateescape")
                    extended = bytes_decode(data, charset or None)[0]
            elif plain is None:
                plain = header_decode(email.utils.unquote(val))
        for name in (extended, plain):
            if name and name.strip():
                return name.strip()
    return None


def _body_and_attachments(msg: EmailMessage, parsed: ParsedMessage) -> None:
    body_part = None
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
        if body_part is not None:
            data = body_part.get_payload(decode=True)
            if not isinstance(data, bytes):
                data = b""
            charset = body_part.get_content_charset()
            if charset is None and body_part.get_content_subtype() == "html":
                # No MIME charset: clients then honour the page's own <meta> declaration.
                meta = _META_CHARSET.search(data[:2048])
                charset = meta.group(1).decode("ascii") if meta else None
            content, problem = bytes_decode(data, charset)
            if problem:
                parsed.errors.append(f"body: {problem}")
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
            filename = _file_name(part)
            content_type = part.get_content_type()
            if disposition != "attachment" and not filename:
                continue  # an alternative body or a text part, not a file
            if len(parsed.attachments) >= MAX_ATTACHMENTS:
                parsed.errors.append(f"more than {MAX_ATTACHMENTS} files: the rest not read")
                break
            if content_type == "message/rfc822" or part.get_content_maintype() == "message":
                # As received: refolding would also re-parse (and cut) every header.
                payload = part.as_bytes(policy=part.policy.clone(refold_source="none"))
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


def _fingerprint_text(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def text_snippet(text: str, size: int = 300) -> str:
    """The first ``size`` characters of ``text`` with its whitespace runs as single spaces:
    ``" ".join(text.split())[:size]``, reading only as much of ``text`` as that needs (a
    body can be 200,000 characters; splitting all of it for a 300-character snippet cost
    more than the rest of the message's row)."""
    end = size * 4
    while end < len(text):
        words = text[:end].split()
        if not text[end - 1].isspace() and not text[end].isspace():
            words = words[:-1]  # the last word may go on past ``end``
        joined = " ".join(words)
        if len(joined) >= size:
            return joined[:size]
        end *= 4
    return " ".join(text.split())[:size]


def sender_fingerprint(date: datetime.datetime | None, from_address: str, subject: str) -> str:
    """sha256 of what the sender wrote: the Date (as an instant, to the second), the From
    address and the Subject, normalised so that a copy another server re-encoded (transfer
    encoding, folding, encoded words or raw UTF-8, letter case of the address) gives the
    same value. Two messages sharing a Message-ID are one message only when this agrees.

    Migration 0005 keeps a frozen copy of this function: change both or neither.
    """
    instant = ""
    if date is not None:
        if date.tzinfo is None:
            date = date.replace(tzinfo=datetime.UTC)
        instant = date.astimezone(datetime.UTC).replace(microsecond=0).isoformat()
    basis = "\n".join([instant, from_address.casefold(), _fingerprint_text(subject)])
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()


def _header_date(msg: EmailMessage, errors: list[str]) -> datetime.datetime | None:
    try:
        value = _first_raw(msg, "Date")
        if type(value) is str and len(value) <= HEADER_MAX_CHARS:
            # policy.default's DateHeader without building it: the same call on the same
            # value, and no date where it finds none (empty, or unreadable: ValueError).
            try:
                date = email.utils.parsedate_to_datetime(value) if value else None
            except ValueError:
                date = None
        else:  # absent, an object set through the API, or cut to HEADER_MAX_CHARS
            header = msg.get("Date")
            date = getattr(header, "datetime", None) if header is not None else None
    except Exception as exc:
        errors.append(f"Date: {exc}")
        return None
    if date is not None and date.tzinfo is None:
        date = date.replace(tzinfo=datetime.UTC)
    return date


def _received_date(msg: EmailMessage) -> datetime.datetime | None:
    """The newest date among the Received headers (each ends in "; <date>")."""
    newest = None
    for value in _raw_header(msg, "Received")[:100]:
        stamp = " ".join(value[-200:].rpartition(";")[2].split())
        try:
            when = email.utils.parsedate_to_datetime(stamp)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        if newest is None or when > newest:
            newest = when
    return newest


# --- fewer lines for the feed parser ----------------------------------------------------------
# The feed parser reads a message line by line (a Python-level readline, a boundary match per
# open multipart, a list append): most of its time on real mail goes to the lines of text
# bodies and base64 attachments, which it only joins back into payload strings. So before
# parsing, each run of lines that can only be content is replaced by one placeholder line,
# and after parsing the runs are put back into every payload, preamble and epilogue. Why
# the tree is the same as the parser builds from the message itself:
#
# A "content line" has text (without its line ending) that is not empty, does not start
# with white space, "-" or "From ", and holds no ":". The parser reads such a line as a
# header (headerRE needs ":", a leading blank or "From "), nor as the blank line ending a
# header block, nor as a boundary ("--..."): in a header block it ends the block (pushed
# back, with the same defect whichever such line it is); elsewhere it is content. A run
# starts at a content line and goes on up to (not including) the next line that starts
# with "-", or the last line ending of the message. After its first line the parser is in
# a body (a single part's, or a multipart's preamble or epilogue), where only a boundary
# (a line starting with "--") or the end ends it: every line of the run is content there,
# whatever it holds. One exception: the body of message/delivery-status is header blocks
# separated by blank lines, so a message with a part that may be of that type is parsed
# again as it is (any Content-Type value holding "delivery" or an encoded word counts);
# so is a message whose shortened form fails to parse (a recursion too deep, say). The
# placeholder is a content line itself, and each run's last line ending stays in place
# (the parser takes it off before a boundary). tests/mailsync/test_parsing_same_result.py
# compares whole results with plain policy.default parsing.
_RUN_START = re.compile(r"[\r\n]((?!From )[^\s:\-][^\r\n:]*(?:\r\n|\r|\n))")
_RUN_MIN_CHARS = 160  # shorter runs are left as they are (not worth a placeholder)
_PLACEHOLDER = "\x00\x00mailsync-run-"  # + index + "\x00"
_PLACEHOLDER_AT = re.compile("\x00\x00mailsync-run-([0-9]+)\x00")


def _line_ending_before_dash(text: str, at: int) -> int:
    """The first index from ``at`` of a line ending ("\\n" or "\\r") followed by "-", or
    ``len(text)``. One pass over the dashes: searching "\\n-" and then "\\r-" stopped at
    every line ending of the message twice (base64 has no "-" at all), a sixth of the
    parse process's time on the sync bench's mail."""
    found = text.find("-", at + 1)
    while found >= 0 and text[found - 1] not in "\r\n":
        found = text.find("-", found + 1)
    return found - 1 if found >= 0 else len(text)


def _collapse_runs(text: str) -> tuple[str, list[str]]:
    """``text`` with each run of content lines (see above) as one placeholder line, and the
    runs (each without its last line ending), by placeholder index."""
    runs: list[str] = []
    # A NUL is looked for first: one character is found several times faster than the
    # placeholder, and mail almost never holds one.
    if "\x00" in text and _PLACEHOLDER in text:
        return text, runs
    out: list[str] = []
    copied = 0
    size = len(text)
    # The line ending before the next line that starts with "-" (``size`` when there is
    # none; looked up again once passed).
    dash = -1
    match = _RUN_START.search(text)
    while match is not None:
        start = match.start(1)
        after = match.end(1) - 1  # the first line's last character (a line ending)
        if dash < after:
            dash = _line_ending_before_dash(text, after)
        # Up to that line ending, or else to the last line ending of the message.
        last = dash if dash < size else max(text.rfind("\n", start), text.rfind("\r", start))
        end = last + 1
        if end - start >= _RUN_MIN_CHARS:
            run = text[start:end]
            ending = "\r\n" if run.endswith("\r\n") else run[-1]
            out.append(text[copied:start])
            out.append(f"{_PLACEHOLDER}{len(runs)}\x00{ending}")
            runs.append(run[: -len(ending)])
            copied = end
        if end >= size:
            break
        match = _RUN_START.search(text, end - 1 if end > start else start + 1)
    if not runs:
        return text, runs
    out.append(text[copied:])
    return "".join(out), runs


def _restore_runs(msg: email.message.Message, runs: list[str]) -> bool:
    """Put the collapsed runs back into every string the parser kept from a body; False
    (the tree is not to be used) where a part may be message/delivery-status."""

    def put_back(value: str) -> str:
        return _PLACEHOLDER_AT.sub(lambda match: runs[int(match.group(1))], value)

    stack = [msg]
    while stack:
        part = stack.pop()
        for name, value in part._headers:
            if name.lower() == "content-type" and (
                type(value) is not str or "=?" in value or "delivery" in value.lower()
            ):
                return False
        payload = part._payload
        if isinstance(payload, list):
            stack.extend(payload)
        elif isinstance(payload, str) and _PLACEHOLDER in payload:
            part._payload = put_back(payload)
        for name in ("preamble", "epilogue"):
            value = getattr(part, name)
            if value is not None and _PLACEHOLDER in value:
                setattr(part, name, put_back(value))
    return True


class _LineBuffer(email.feedparser.BufferedSubFile):
    """The feed parser's line buffer, checking a line against the pushed "end of part"
    matchers only when one of them could match it.

    The feed parser pushes two kinds: a multipart's boundary (``boundaryre.match``: the line
    starts with "--" and the boundary) and, in message/delivery-status, the blank line
    (``NLCRE.match``: the line starts with CR or LF). A line starting with anything else
    matches neither, so it is returned at once instead of being matched once per open
    multipart (quadratic in the nesting: a part nested 300 deep checked every line 300
    times). Same lines, same answers; and no extra call frame (this replaces readline), so a
    message nests exactly as deep before the recursion limit as with the stdlib's.
    """

    def readline(self):  # type: ignore[no-untyped-def]
        if not self._lines:
            if self._closed:
                return ""
            return email.feedparser.NeedMoreData
        line = self._lines.popleft()
        if line[:1] in ("-", "\r", "\n") and line:
            for ateof in reversed(self._eofstack):
                if ateof(line):
                    self._lines.appendleft(line)
                    return ""
        return line


# The pattern the feed parser compiles for each multipart's boundary, around re.escape of
# "--" and the boundary (email.feedparser.FeedParser._parsegen).
_BOUNDARY_HEAD = "(?P<sep>"
_BOUNDARY_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_BOUNDARY = re.compile(_BOUNDARY_TAIL[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _BoundaryLine:
    """A compiled boundary pattern, without compiling it: the line starts with the
    separator, and the rest matches the pattern's fixed tail. Same matches, same groups
    ("end", "ws", "linesep") at the same positions."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if line.startswith(self.separator):
            return _AFTER_BOUNDARY.match(line, len(self.separator))
        return None


class _FeedParserRe:
    """``re`` as the feed parser's _parsegen sees it: ``compile`` of a boundary pattern
    gives a _BoundaryLine. Boundaries are unique per message, so ``re``'s cache never holds
    them, and compiling one cost about 0.3 ms: 15% of parsing the sync bench's mail. Any
    other pattern (a later Python's _parsegen may compile others) goes to ``re``."""

    def __getattr__(self, name: str) -> object:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: object, flags: int = 0) -> object:
        if (
            not flags
            and isinstance(pattern, str)
            and pattern.startswith(_BOUNDARY_HEAD)
            and pattern.endswith(_BOUNDARY_TAIL)
        ):
            escaped = pattern[len(_BOUNDARY_HEAD) : -len(_BOUNDARY_TAIL)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:
                return _BoundaryLine(separator)
        return re.compile(pattern, flags)  # type: ignore[call-overload]


def _with_globals(function: types.FunctionType, **names: object) -> types.FunctionType:
    """``function``'s own code, seeing ``names`` in place of its module's globals of those
    names (for this parser only: the stdlib's module is left as it is)."""
    copy = types.FunctionType(
        function.__code__,
        {**function.__globals__, **names},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__qualname__ = function.__qualname__
    return copy


class _FeedParser(email.feedparser.FeedParser):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._input = _LineBuffer()  # the parse generator is not started yet

    # The stdlib's parse generator, unchanged but for the boundary patterns (see
    # _FeedParserRe); it calls itself as self._parsegen, so nested parts use it too.
    _parsegen = _with_globals(email.feedparser.FeedParser._parsegen, re=_FeedParserRe())


class _Parser(email.parser.Parser):
    def parse(self, fp, headersonly=False):  # type: ignore[no-untyped-def]
        # email.parser.Parser.parse with _FeedParser.
        feedparser = _FeedParser(self._class, policy=self.policy)
        if headersonly:
            feedparser._set_headersonly()
        while data := fp.read(8192):
            feedparser.feed(data)
        return feedparser.close()


def _bytes_parser(parse_policy: policy.EmailPolicy) -> email.parser.BytesParser:
    parser = email.parser.BytesParser(policy=parse_policy)
    parser.parser = _Parser(policy=parse_policy)
    return parser


def _message_from_bytes(
    raw: bytes, parse_policy: policy.EmailPolicy, headers: _RememberingHeaders
) -> EmailMessage:
    """``email.message_from_bytes(raw, policy=parse_policy)``, with runs of content lines
    fed to the parser as one line each (see _RUN_START), else the message as it is; through
    _LineBuffer either way, with the call depth of message_from_bytes."""
    collapsed, runs = _collapse_runs(raw.decode("ASCII", errors="surrogateescape"))
    if runs:
        try:
            # One call deeper into the parser than below: a message nested deeply enough
            # to exhaust the recursion limit there surely does so here, and is then parsed
            # as it is below.
            msg = _parse_text_deeper(collapsed, parse_policy)
        except Exception:
            msg = None
        if msg is not None and _restore_runs(msg, runs):
            assert isinstance(msg, EmailMessage)
            return msg
        headers.cut.clear()  # counted again by the parse below
    msg = _bytes_parser(parse_policy).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def _parse_text_deeper(text: str, parse_policy: policy.EmailPolicy) -> email.message.Message:
    # _message_from_bytes, _parse_text_deeper, _parse_text, parsestr: one frame more than
    # _message_from_bytes, parsebytes, parsestr.
    return _parse_text(text, parse_policy)


def _parse_text(text: str, parse_policy: policy.EmailPolicy) -> email.message.Message:
    return _Parser(policy=parse_policy).parsestr(text)


# Two line endings in a row: a blank line (CRLF, CR or LF, as the feed parser splits lines).
_BLANK_LINE = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")


def _parse_tree(raw: bytes, headers: _RememberingHeaders, errors: list[str]) -> EmailMessage:
    """The message's MIME tree, or only its header when the body is too big a tree to parse
    (too many parts, or nested deeper than the parser's recursion allows)."""
    parse_policy = _policy(headers)
    boundaries = raw.count(b"\n--")
    multiparts = raw.count(b"oundary=") if boundaries > MAX_MULTIPARTS else 0
    if boundaries > MAX_BOUNDARY_LINES:
        errors.append(f"structure: {boundaries} MIME boundary lines: body not read")
    elif multiparts > MAX_MULTIPARTS:
        errors.append(f"structure: {multiparts} multipart sections: body not read")
    else:
        try:
            return _message_from_bytes(raw, parse_policy, headers)
        except RecursionError:
            errors.append("structure: MIME parts nested too deeply: body not read")
    # Header only: the parser would read every line after the header block into a payload
    # that is dropped below, so it is given the message up to its first blank line (the
    # header block ends there at the latest).
    blank = _BLANK_LINE.search(raw)
    head = raw if blank is None or raw[:1] in b"\r\n" else raw[: blank.end()]
    msg = _bytes_parser(parse_policy).parsebytes(head, headersonly=True)
    msg.set_payload("")  # the body is in ``raw``; nothing below reads it as text
    assert isinstance(msg, EmailMessage)
    return msg


def message_parse(raw: bytes, *, internaldate: datetime.datetime | None = None) -> ParsedMessage:
    """Parse ``raw``; problems are collected in ``errors`` instead of raised.

    ``internaldate`` is the server's arrival time (IMAP INTERNALDATE), used with a flag
    (``date_source``) when the message has no readable Date; without it, the newest
    Received header's date.
    """
    errors: list[str] = []
    headers = _RememberingHeaders()
    try:
        msg = _parse_tree(raw, headers, errors)
    except Exception as exc:
        return ParsedMessage(
            key=hashlib.sha256(b"raw:" + raw).hexdigest(),
            date=internaldate,
            date_source="server" if internaldate else "none",
            errors=[f"message: {exc}"],
        )
    message_id = normalize_message_id(_text_header(msg, "Message-ID", errors))[:900]
    parsed = ParsedMessage(key="", message_id=message_id, errors=errors)
    subject = _raw_header(msg, "Subject")
    if subject:
        text = header_decode(subject[0][: 4 * HEADER_MAX_CHARS])
        parsed.subject = _clean(" ".join(text.split()))[:2000]
    senders = _addresses(msg, "From", errors)
    if senders:
        parsed.from_name = _sender_name(msg, senders[0][0])[:200]
        parsed.from_address = _normalized(senders[0][1])
    parsed.to = _address_list(msg, "To", errors)
    parsed.cc = _address_list(msg, "Cc", errors)
    parsed.reply_to = _address_list(msg, "Reply-To", errors)
    parsed.in_reply_to = normalize_message_id(_text_header(msg, "In-Reply-To", errors))
    parsed.references = _ids(_text_header(msg, "References", errors))[:50]
    header_date = _header_date(msg, errors)
    parsed.date = header_date
    if header_date is None:
        parsed.date, parsed.date_source = internaldate, "server"
        if parsed.date is None:
            parsed.date, parsed.date_source = _received_date(msg), "received"
        if parsed.date is None:
            parsed.date_source = "none"
    for defect in getattr(msg, "defects", [])[:5]:
        errors.append(f"defect: {type(defect).__name__}")
    _body_and_attachments(msg, parsed)
    for cut in headers.cut[:5]:
        name, _colon, length = cut.partition(": ")
        errors.append(f"{name}: {length} characters, only the first {HEADER_MAX_CHARS} read")
    # Exception texts and header leftovers may still carry undecodable bytes.
    parsed.errors = [_clean(error) for error in parsed.errors]
    parsed.references = [_clean(ref) for ref in parsed.references]
    parsed.in_reply_to = _clean(parsed.in_reply_to)
    for attachment in parsed.attachments:
        attachment.content_type = _clean(attachment.content_type)
    message_key(parsed, header_date=header_date, raw=raw)
    return parsed


def message_key(
    parsed: ParsedMessage, *, header_date: datetime.datetime | None, raw: bytes
) -> None:
    """Set ``parsed.fingerprint`` and the dedupe ``key``: the Message-ID with the sender's
    fingerprint (a reused Message-ID on another message gives another key), or without a
    Message-ID a hash of what the sender wrote (the same message seen in two mailboxes
    differs in its trace headers, so not of the raw bytes)."""
    parsed.fingerprint = sender_fingerprint(header_date, parsed.from_address, parsed.subject)
    if parsed.message_id:
        basis = f"mid:{parsed.message_id}\n{parsed.fingerprint}"
        parsed.key = hashlib.sha256(basis.encode()).hexdigest()
        return
    basis = "\n".join(
        [
            header_date.isoformat() if header_date else "",
            parsed.from_address,
            ",".join(parsed.to),
            parsed.subject,
            parsed.text,
        ]
    )
    if not parsed.text and not parsed.subject:
        basis += hashlib.sha256(raw).hexdigest()
    parsed.key = hashlib.sha256(f"content:{_clean(basis)}".encode()).hexdigest()


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


def stored_messages_parse(
    items: list[tuple[str, datetime.datetime | None]],
) -> tuple[list[ParsedMessage | None], float]:
    """``messages_parse`` of raw mail the sync process has written to files (the blob store
    on this machine): the parse process reads them from there instead of receiving every
    byte through its pipe. None for a file that is gone (the caller parses its own copy)."""
    start = time.process_time()
    parsed: list[ParsedMessage | None] = []
    for path, internaldate in items:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            parsed.append(None)
            continue
        parsed.append(message_parse(raw, internaldate=internaldate))
    return parsed, time.process_time() - start
