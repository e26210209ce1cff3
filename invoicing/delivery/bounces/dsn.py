"""Parse delivery-status notifications and the non-standard bounce formats real MTAs send.

This module only extracts facts (who failed, with which status, reply code and diagnostic
text); deciding what those facts mean is the job of :mod:`invoicing.delivery.bounces.rules`.

Everything here must survive hostile input: mail arrives from the internet, so a malformed
message yields an empty :class:`ParsedReport` rather than an exception.

One piece (over 500 lines) on purpose: the RFC 3464 reports and each MTA's own format
go through the same walk of the message and the same extraction helpers (addresses, status
codes, reply codes, diagnostic text), and the one rule that hostile input never raises is
easier to keep when the whole parser is read together.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import dataclass, field, replace
from email.header import decode_header, make_header
from email.message import Message

from . import mime
from .mta import CHALLENGE_RE, DELAY_RE, MtaFamily, detect_mta
from .vocabulary import Prefiltered

__all__ = [
    "DeliveryFacts",
    "ParsedReport",
    "parse_report",
]

# Bounces quote the original message; anything past a few MiB is attachment payload that
# cannot change the verdict but could make parsing slow.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_PARTS = 200
MAX_DEPTH = 12
# Only the explanation at the top of a bounce matters; bounding it keeps regexes linear-cheap.
MAX_TEXT_CHARS = 64 * 1024
# The prose that is scanned for recipients and causes: a server's explanation fits easily.
MAX_PROSE_CHARS = 16 * 1024
MAX_DSN_PROSE_CHARS = 6 * 1024
MAX_HEADER_CHARS = 8 * 1024
MAX_INDEXED_HEADERS = 500
MAX_ADDRESS_FIELD = 1024
MAX_LINE_CHARS = 2000
MAX_RECIPIENTS = 50

DSN_CONTENT_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/delivery-status"}
)
ORIGINAL_CONTENT_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"}
)
FEEDBACK_CONTENT_TYPE = "message/feedback-report"

ADDRESS_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# An enhanced status code (RFC 3463). The look-behind rejects IP addresses and version
# numbers such as "v5.1.1" or "192.5.1.1"; the look-ahead rejects longer dotted numbers.
STATUS_RE = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w.]*\d)")
REPLY_CODE_RE = re.compile(r"(?<![\w.#-])([245][0-5]\d)(?=[\s:-]|$)")
FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)$")
FINAL_RECIPIENT_RE = re.compile(
    r"^(?:final|original|x-actual)-recipient[ \t]*:", re.IGNORECASE | re.MULTILINE
)

# Lines that introduce the copy of the original message; the explanation ends there.
ORIGINAL_MARKER_RE = re.compile(
    r"^[ \t|>]*[-=_*#]*[ \t]*(?:"
    r"this is a copy of|below this line is a copy|enclosed is a copy|"
    r"original message|the header of the original message|included is a copy|"
    r"message headers follow|below is a copy of the original|unsent message follows|"
    r"returned message|undelivered message|original message headers|"
    r"message text follows|your message reads|a copy of the original message|"
    r"the original message headers|rfc822 headers|headers of your message"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
# The same on lower-cased text with a newline in front: a literal first character lets the
# regex engine jump from line to line instead of trying every position.
# Prefiltered: most reports name none of the markers, which ``in`` finds out faster.
ORIGINAL_MARKER_LOWER_RE = Prefiltered(re.compile("\n" + ORIGINAL_MARKER_RE.pattern[1:]))
QUOTED_HEADER_LINE_RE = re.compile(r"\n(?:Return-Path|Received|Return-path|DKIM-Signature):")
HTML_TAG_RE = re.compile(r"<[^<>]{0,2000}>")
WS_RE = re.compile(r"\s+")

DAEMON_LOCALPART_RE = re.compile(
    r"^(?:mailer-daemon|mailer_daemon|postmaster|mail-daemon|maildaemon|"
    r"mail\.?delivery|bounces?|bounce-notification|nobody|root|mmsc|sysadmin|"
    r"mdaemon|double-bounce|no-?reply|system|administrator|mail)$",
    re.IGNORECASE,
)
DAEMON_NAME_RE = re.compile(
    r"mailer[- ]?daemon|mail delivery|postmaster|delivery subsystem|"
    r"system administrator|ndr administrator|mail administrator",
    re.IGNORECASE,
)
BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|delivery (?:status )?notification|delivery fail|"
    r"failure notice|mail delivery|returned mail|returning message|"
    r"delivery (?:has )?failed|delivery problem|could not be delivered|"
    r"not delivered|non[- ]?delivery|mail failure|mail failed|delayed mail|"
    r"delivery delay|warning: message|message delivery|mail system error|"
    r"unzustellbar|nicht zustellbar|non remis|no se puede entregar|"
    r"rejected|delivery report|^dsn\b|permanent error|temporary error",
    re.IGNORECASE,
)
BOUNCE_PHRASE_RE = re.compile(
    r"could not be delivered|couldn't be delivered|wasn't able to deliver|"
    r"was not able to deliver|unable to deliver|undeliverable|delivery has failed|"
    r"delivery to the following recipient|permanent error|permanent fatal|"
    r"following address(?:\(es\))? failed|could not be reached|"
    r"error delivering your mail|did not reach|failed permanently|"
    r"delivery status notification|an error has occurred while attempting to deliver|"
    r"message could not be delivered|delivery problems|has been delayed|"
    r"remote host said|while talking to|transcript of session|"
    r"no valid recipients|delivery failed|failed addresses|non-delivered|"
    r"mail delivery failed|rejected|user unknown|unknown user|mailbox|"
    r"incorrectly constructed|malformed|account is disabled|mail system error|"
    r"retry timeout|not delivered|returned to sender|"
    r"could not deliver|couldn't deliver|failed to deliver|not be delivered|"
    r"were not valid|did not receive (?:this|your) message|undeliverable to|"
    r"message was not accepted|permanent fatal errors|address(?:\(es\)|es)? failed|"
    r"no such (?:user|mailbox|address|recipient)|does not exist|invalid (?:user|recipient)|"
    r"not yet been delivered|still undelivered|awaiting delivery|will keep trying|"
    r"could not send message for|delivery (?:attempts|problem|report|error)|"
    r"\u9001\u4fe1\u3067\u304d\u307e\u305b\u3093|"  # Japanese: "could not be sent"
    "\u914d\u9001\u3067\u304d\u307e\u305b\u3093|"  # "could not be delivered"
    "\u5b9b\u5148\u4e0d\u660e|"  # "addressee unknown"
    "\u914d\u4fe1\u3067\u304d\u307e\u305b\u3093|"  # "could not be delivered" (to a mailbox)
    # A quoted SMTP failure reply: "host ... said: 550 5.2.1 ...", "550-5.1.1 ...".
    r"said: ?[45]\d\d|(?<![\d.])[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}(?![\d.])",
)


@dataclass(frozen=True)
class DeliveryFacts:
    """What a report says about one recipient, before any interpretation."""

    recipient: str | None
    action: str | None = None
    status: str | None = None
    reply_code: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None


@dataclass(frozen=True)
class ParsedReport:
    """The structural reading of one message.

    ``kind`` is one of ``"dsn"`` (RFC 3464 fields found), ``"text"`` (a bounce in some MTA's
    own prose), ``"feedback"`` (ARF complaint), ``"auto_reply"`` or ``"none"``.
    """

    kind: str
    recipients: tuple[DeliveryFacts, ...] = ()
    subject: str = ""
    sender: str | None = None
    text: str = ""
    feedback_type: str | None = None
    mta: str | None = None
    warnings: tuple[str, ...] = field(default=())


EMPTY_REPORT = ParsedReport(kind="none")


def parse_report(raw: bytes) -> ParsedReport:
    """Read ``raw`` (an RFC 5322 message) and return the facts it reports. Never raises."""
    try:
        return _parse(raw)
    except (RecursionError, MemoryError):
        return ParsedReport(kind="none", warnings=("parser-exhausted",))
    except Exception as exc:
        # Mail is hostile input: one unforeseen malformation must cost us one message's
        # classification, never the task processing the whole mailbox.
        return ParsedReport(kind="none", warnings=(f"parse-error: {type(exc).__name__}",))


# --------------------------------------------------------------------------- helpers


def fold(text: str | None) -> str | None:
    """Collapse runs of whitespace; ``None`` for empty text."""
    if text is None:
        return None
    folded = " ".join(text.split())  # str.split() splits on runs of any whitespace
    return folded or None


BRACKETED_ADDRESS_RE = re.compile(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>")
# RFC 5321 quoted local part: "john..doe"@example.com is one address, not john..doe@.
QUOTED_ADDRESS_RE = re.compile(r'"((?:[^"\\\r\n]|\\.){1,64})"@([A-Za-z0-9.-]+[A-Za-z0-9])')
DOT_ATOM_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def extract_address(value: str | None) -> str | None:
    """Return the first address in ``value``, lower-cased, without brackets or type prefix."""
    if not value or "@" not in value:
        return None
    # An address is at most 254 characters; bounding the input keeps the search linear.
    value = value[:MAX_ADDRESS_FIELD]
    # "rfc822; user@example.com" - the address type is noise for us.
    if ";" in value:
        head, _, tail = value.partition(";")
        if "@" not in head or "@" in tail:
            value = tail
    if '"@' in value:
        quoted = QUOTED_ADDRESS_RE.search(value)
        if quoted:
            local, domain = quoted.group(1).lower(), quoted.group(2).lower()
            # Quotes that protect nothing are dropped, so both spellings are one address.
            return f"{local}@{domain}" if DOT_ATOM_RE.match(local) else f'"{local}"@{domain}'
    bracketed = BRACKETED_ADDRESS_RE.search(value) if "<" in value else None
    match = ADDRESS_RE.search(bracketed.group(1) if bracketed else value)
    if not match:
        return None
    address = match.group(0).strip("'\"").lower()
    local, _, domain = address.rpartition("@")
    local, domain = local.lstrip("."), domain.rstrip(".")
    if not local or not domain:
        return None
    # The canonical spelling (RFC 5321 4.1.2): a local part that is not a dot-atom
    # ("neko..nyaan") is quoted, so both ways a report writes it name one address.
    return f"{local}@{domain}" if DOT_ATOM_RE.match(local) else f'"{local}"@{domain}'


def address_domain(address: str | None) -> str | None:
    """The domain of ``address``, lower-cased; None for no address."""
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower() or None


def find_status(text: str | None, klass: str | None = None) -> str | None:
    """First plausible enhanced status code in ``text`` (of class ``klass`` if given)."""
    if not text:
        return None
    for match in STATUS_RE.finditer(text):
        if klass and match.group(1) != klass:
            continue
        subject = int(match.group(2))
        if subject > 7:
            continue
        return f"{match.group(1)}.{subject}.{int(match.group(3))}"
    return None


def find_last_status(text: str | None) -> str | None:
    """Last plausible enhanced status code in ``text``."""
    if not text:
        return None
    last = None
    for match in STATUS_RE.finditer(text):
        subject = int(match.group(2))
        if subject <= 7:
            last = f"{match.group(1)}.{subject}.{int(match.group(3))}"
    return last


def find_reply_code(text: str | None) -> str | None:
    """First SMTP reply code that looks like one (4xx/5xx) in ``text``."""
    if not text:
        return None
    for match in REPLY_CODE_RE.finditer(text):
        code = match.group(1)
        if code[0] in "45":
            return code
    return None


def _header_items(msg: Message) -> list[tuple[str, object]]:
    headers = getattr(msg, "_headers", None)
    if isinstance(headers, list):
        return headers
    try:
        return list(msg.items())
    except Exception:  # undecodable header objects: no headers
        return []


def _header_index(msg: Message) -> dict[str, object]:
    """Lower-cased name -> first value; built once per message (Message.get is a scan)."""
    index = getattr(msg, "_bounce_header_index", None)
    if index is None:
        index = {}
        # The parsed headers as they are: Message.items() would re-sanitise every one.
        for key, value in _header_items(msg)[:MAX_INDEXED_HEADERS]:
            index.setdefault(str(key).lower(), value)
        msg._bounce_header_index = index  # type: ignore[attr-defined]
    return index


def _header(msg: Message, name: str) -> str:
    """A header as text, RFC 2047-decoded where possible; '' when absent or undecodable."""
    value = _header_index(msg).get(name.lower())
    if value is None:
        return ""
    try:
        text = str(value)[:MAX_HEADER_CHARS]
    except Exception:  # compat32 header objects can fail on undecodable bytes
        return ""
    if "=?" in text:
        # Undecodable encoded-words (bad charset, broken base64) keep their raw form.
        with contextlib.suppress(Exception):
            text = str(make_header(decode_header(text)))
    return text


def _raw_header(part: Message, name: str) -> str | None:
    """A part's header value as parsed, without the policy's per-read sanitising.

    ``Message.get`` re-checks every header for surrogates on each read; for the structural
    headers read here (Content-Type, Content-Disposition) that is most of the walking cost.
    """
    headers = getattr(part, "_headers", None)
    if headers is None:
        try:
            return part.get(name)
        except Exception:  # compat32 header objects can fail on undecodable bytes
            return None
    if len(headers) <= MAX_INDEXED_HEADERS:
        # One dict per part instead of a scan per read (the index holds all of them).
        value = _header_index(part).get(name)
        return value if value is None or isinstance(value, str) else str(value)
    size = len(name)
    for key, value in headers:
        if len(key) == size and key.lower() == name:
            return value if isinstance(value, str) else str(value)
    return None


CHARSET_PARAM_RE = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)
REPORT_TYPE_PARAM_RE = re.compile(r";\s*report-type\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


def _content_type(part: Message) -> str:
    """The part's content type as compat32 reads it (RFC 2045 defaults), lower-cased."""
    value = _raw_header(part, "content-type")
    if value is None:
        try:
            return part.get_default_type()
        except Exception:  # not a Message after all: plain text is the safe reading
            return "text/plain"
    ctype = value.split(";", 1)[0].strip().lower()
    # RFC 2045: a broken Content-Type means text/plain.
    return ctype if ctype.count("/") == 1 else "text/plain"


def _payload_text(part: Message) -> str:
    """Decoded text of a non-multipart part, tolerating lying charsets and encodings."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # bad base64/qp: fall back to the undecoded payload
        payload = None
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, str):
            return raw[:MAX_TEXT_CHARS]
        return ""
    if not isinstance(payload, bytes):
        return ""
    payload = payload[: MAX_TEXT_CHARS * 4]
    match = CHARSET_PARAM_RE.search(_raw_header(part, "content-type") or "")
    # A missing or mangled charset parameter: utf-8 with replacement is safest.
    charset = match.group(1).lower() if match else "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate, errors="replace")[:MAX_TEXT_CHARS]
        except (LookupError, ValueError):
            continue
    return payload.decode("latin-1")[:MAX_TEXT_CHARS]


def _drop_html_blocks(html: str) -> str:
    """Remove <style>/<script>/<head> blocks; linear, unlike a lazy-dot regex on bad HTML."""
    lower = html.lower()
    out: list[str] = []
    pos = 0
    while True:
        starts = [
            i for i in (lower.find(f"<{t}", pos) for t in ("style", "script", "head")) if i >= 0
        ]
        if not starts:
            out.append(html[pos:])
            break
        start = min(starts)
        tag = next(t for t in ("style", "script", "head") if lower.startswith(f"<{t}", start))
        out.append(html[pos:start])
        end = lower.find(f"</{tag}", start)
        if end < 0:
            break
        close = lower.find(">", end)
        pos = len(html) if close < 0 else close + 1
    return " ".join(out)


def _html_to_text(html: str) -> str:
    html = _drop_html_blocks(html)
    html = re.sub(r"<br\s*/?>|</p\s*>|</div\s*>|</tr\s*>", "\n", html, flags=re.IGNORECASE)
    text = HTML_TAG_RE.sub(" ", html)
    for entity, char in (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        text = text.replace(entity, char)
    return text


def _delivery_status_text(part: Message) -> str:
    """The raw field text of a message/delivery-status part.

    compat32 parses such a part into one pseudo-message per field block; rebuild the text so
    one field parser serves both this and DSN fields pasted into plain text.
    """
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload
    if not isinstance(payload, list):
        return ""
    chunks: list[str] = []
    for block in payload[:MAX_PARTS]:
        if not isinstance(block, Message):
            continue
        lines = [f"{key}: {value}" for key, value in block.items()]
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            lines.append(body)
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks)


def parse_field_blocks(text: str) -> list[dict[str, str]]:
    """Split RFC 3464 style ``Field: value`` text into blocks separated by blank lines.

    A repeated ``Final-Recipient`` inside one block also starts a new block, because some
    MTAs forget the blank line between recipients.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines()[:5000]:
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[:1] in (" ", "\t") and last is not None:
            current[last] = f"{current[last]} {line.strip()}"
            continue
        match = FIELD_RE.match(line)
        if not match:
            last = None
            continue
        key, value = match.group(1).lower(), match.group(2).strip()
        if key == "final-recipient" and "final-recipient" in current:
            blocks.append(current)
            current = {}
        if key not in current:
            current[key] = value
            last = key
        else:
            last = None
    if current:
        blocks.append(current)
    return blocks


def _facts_from_blocks(blocks: list[dict[str, str]]) -> list[DeliveryFacts]:
    facts: list[DeliveryFacts] = []
    per_message: dict[str, str] = {}
    for block in blocks:
        recipient = None
        # Original-Recipient is the address as we sent it; Final-Recipient may be what an
        # alias or forwarding rule turned it into.
        for key in ("original-recipient", "final-recipient", "x-actual-recipient"):
            recipient = extract_address(block.get(key))
            if recipient:
                break
        if not recipient and "status" not in block and "action" not in block:
            if "reporting-mta" in block or "received-from-mta" in block:
                per_message = block
            continue
        if not recipient and "action" not in block:
            continue
        diagnostic = block.get("diagnostic-code") or ""
        # "smtp; 550 ..." - the type only matters when it is not SMTP (X-Unix exit codes).
        if re.match(r"^\s*smtp\s*;", diagnostic, re.IGNORECASE):
            diagnostic = diagnostic.split(";", 1)[1]
        diagnostic = fold(diagnostic)
        action = (block.get("action") or "").strip().lower().split(" ")[0] or None
        if action:
            action = action.strip("();,.")
        status_field = block.get("status")
        status = find_status(status_field)
        # "Status: 550" appears in the wild; keep the class at least.
        if status is None and status_field and re.match(r"^\s*[45]\d\d\b", status_field):
            status = f"{status_field.strip()[0]}.0.0"
        remote = block.get("remote-mta") or per_message.get("reporting-mta")
        if remote and ";" in remote:
            remote = remote.split(";", 1)[1]
        facts.append(
            DeliveryFacts(
                recipient=recipient,
                action=action,
                status=status,
                reply_code=None,
                diagnostic=diagnostic,
                remote_mta=fold(remote),
            )
        )
    return facts


# --------------------------------------------------------------------------- walking


@dataclass
class _Collected:
    dsn_texts: list[str] = field(default_factory=list)
    feedback_texts: list[str] = field(default_factory=list)
    human_texts: list[str] = field(default_factory=list)
    original_headers: list[Message] = field(default_factory=list)
    report_type: str = ""
    top_type: str = ""


def _walk(msg: Message) -> _Collected:
    """Collect the interesting parts without descending into quoted original messages."""
    found = _Collected()
    found.top_type = _content_type(msg)
    match = REPORT_TYPE_PARAM_RE.search(_raw_header(msg, "content-type") or "")
    found.report_type = match.group(1).lower() if match else ""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        ctype = _content_type(part)
        if ctype in DSN_CONTENT_TYPES:
            found.dsn_texts.append(_delivery_status_text(part))
            continue
        if ctype == FEEDBACK_CONTENT_TYPE:
            found.feedback_texts.append(_delivery_status_text(part))
            continue
        if ctype in ORIGINAL_CONTENT_TYPES:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found.original_headers.append(inner[0])
            elif isinstance(inner, str):
                found.original_headers.append(mime.message_from_string(inner[:MAX_TEXT_CHARS]))
            continue
        if part.is_multipart():
            if depth >= MAX_DEPTH:
                continue
            children = part.get_payload()
            if isinstance(children, list):
                # Reverse so the stack pops them in document order.
                stack.extend((child, depth + 1) for child in reversed(children[:MAX_PARTS]))
            continue
        if ctype.startswith("multipart/"):
            # A multipart whose boundary never matched: its body is all we have, as text.
            payload = part.get_payload()
            if isinstance(payload, str):
                found.human_texts.append(payload[:MAX_TEXT_CHARS])
            continue
        if ctype.startswith("text/") or (ctype == "application/octet-stream" and depth == 0):
            disposition = (_raw_header(part, "content-disposition") or "").lower()
            text = _payload_text(part)
            if ctype == "text/html":
                text = _html_to_text(text)
            if "attachment" in disposition and not FINAL_RECIPIENT_RE.search(text):
                continue
            found.human_texts.append(text)
    return found


# --------------------------------------------------------------------------- text bounces

QMAIL_RECIPIENT_RE = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:?\s*$", re.MULTILINE)
# A line holding (mostly) just an address, as Exim, Gmail, Postfix and many others list them.
ADDRESS_LINE_RE = re.compile(
    r"^[ \t]*(?:[-*]|\d+\.|recipient:)?[ \t]*[\"'<]?"
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)"
    r"[\"'>]?[ \t]*(?::|\.\.\.|\s|$)(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
LEAD_IN_RE = re.compile(
    r"(?<![\w.@-])(?:delivering your mail to|"
    r"deliver(?:ed)? (?:your )?message to(?: the following)?(?: address)?"
    r"|delivery to the following recipients? (?:failed|has been delayed)[^:\n]*"
    r"|could not be delivered to|unable to deliver (?:message )?to|undeliverable to|"
    r"was not delivered to|could not deliver (?:your message )?to|"
    r"undeliverable to the following:?|not delivered to the following:?|"
    r"did not receive (?:this|your) message:?|failed addresses follow:?|"
    r"following (?:recipient|address)(?:\(s\)|es)?[^:\n]{0,40}|"
    r"failed recipient|original-recipient|recipient address|rcpt to|"
    r"message to|not delivered to|for|to)(?![\w@])[: \t]*<?"
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)",
    re.IGNORECASE,
)


COLON_ADDRESS_RE = re.compile(
    r"^([^\n@:]{3,100}):[ \t]*<?([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)"
    r">?\.?[ \t]*$",
    re.MULTILINE,
)


def _cut_at_original(text: str) -> str:
    lowered = text.lower()
    # Searching lower-cased text is much faster; positions carry over only when lower-casing
    # kept the length (it can change it for a few non-ASCII letters).
    if len(lowered) == len(text):
        # In "\n" + text, a match at i is the line that starts at i in text.
        match = ORIGINAL_MARKER_LOWER_RE.search("\n" + lowered)
    else:
        match = ORIGINAL_MARKER_RE.search(text)
    if match and match.start() > 0:
        return text[: match.start()]
    # Without a marker, the quoted headers usually start with a Received/Return-Path line.
    match = QUOTED_HEADER_LINE_RE.search("\n" + text)
    if match and match.start() > 0:
        return text[: match.start()]
    return text


def _block_after(text: str, start: int, stop: int | None = None) -> str:
    """The text from ``start`` up to the next blank line (a recipient's explanation).

    ``stop`` is where the next recipient's entry begins: reports that list recipients
    without blank lines between them must not lend one recipient's reason to another.
    """
    rest = text[start : min(start + 1500, stop if stop is not None else len(text))]
    lines = rest.split("\n")[:15]
    out: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip():
            if out and i > 0:
                break
            continue
        out.append(line)
    return "\n".join(out)


def _text_recipients(text: str, excluded: set[str]) -> list[tuple[str, str]]:
    """(recipient, explanation block) pairs from a prose bounce, in document order."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(address: str, block: str) -> None:
        if len(found) >= MAX_RECIPIENTS:
            return
        # "name@example.com <real@example.net>": the bracketed one is the address, the
        # first only a display name that happens to contain an @.
        display = re.match(r"^\s*<([^<>\s]+@[^<>\s]+)>", block)
        if display:
            address = display.group(1)
        address = address.strip(".'\"<>").lower()
        if address in excluded or address in seen or "@" not in address:
            return
        seen.add(address)
        found.append((address, block))

    for match in QMAIL_RECIPIENT_RE.finditer(text):
        if len(found) >= MAX_RECIPIENTS:
            break
        add(match.group(1), _block_after(text, match.end()))
    if found:
        return found
    for match in LEAD_IN_RE.finditer(text):
        add(match.group(1), _block_after(text, match.end()))
        if found:
            break
    lines = list(itertools.islice(ADDRESS_LINE_RE.finditer(text), MAX_RECIPIENTS * 4))
    for i, match in enumerate(lines):
        if len(found) >= MAX_RECIPIENTS:
            break
        # The entry ends where a line names another address, blank line or not.
        address = match.group(1).lower()
        stop = next((m.start() for m in lines[i + 1 :] if m.group(1).lower() != address), None)
        add(match.group(1), match.group(2) + "\n" + _block_after(text, match.end(), stop))
    if not found:
        # "User's mailbox is full: <addr>" - a cause, a colon, then the address.
        for match in COLON_ADDRESS_RE.finditer(text):
            add(match.group(2), match.group(1) + "\n" + _block_after(text, match.end()))
            if len(found) >= MAX_RECIPIENTS:
                break
    return found


# --------------------------------------------------------------------------- top level

AUTO_REPLY_SUBJECT_RE = re.compile(
    r"^\s*(?:auto(?:matic)?[- _]?(?:reply|response|antwort)|auto:|out of (?:the )?office|"
    r"away from|on vacation|vacation|abwesenheit|absence|r[ée]ponse automatique|"
    r"respuesta autom[aá]tica|risposta automatica|away until|i am away|ooo\b)",
    re.IGNORECASE,
)


def _is_daemon_sender(sender_header: str) -> bool:
    address = extract_address(sender_header) or ""
    local = address.split("@", 1)[0]
    if local and DAEMON_LOCALPART_RE.match(local):
        return True
    return bool(DAEMON_NAME_RE.search(sender_header)) or sender_header.strip() in ("<>", "")


def _parse(raw: bytes) -> ParsedReport:
    if not isinstance(raw, (bytes, bytearray)):
        raise TypeError("raw message must be bytes")
    raw = _without_original_body(bytes(raw[:MAX_MESSAGE_BYTES]))
    # The stdlib's compat32 tree, read faster (see mime.py).
    msg = mime.message_from_bytes(raw)
    msg = _repair_boundary(raw, msg)
    report = _parse_message(msg)
    verp = _verp_recipient(msg)
    if verp and report.kind in ("dsn", "text"):
        report = _prefer_recipient(report, verp)
    return report


# On lower-cased bytes with a newline in front: a literal first byte lets the regex engine
# jump between lines instead of trying every position.
REPORT_TYPE_RE = re.compile(rb"\ncontent-type:[ \t]*multipart/report\b")
ORIGINAL_PART_RE = re.compile(
    rb"\ncontent-type:[ \t]*(?:message/rfc822|message/global|text/rfc822-headers)\b"
)
STATUS_PART_RE = re.compile(rb"\ncontent-type:[ \t]*(?:message|text)/(?:global-)?delivery-status\b")
BLANK_LINE_RE = re.compile(rb"\n[ \t]*\r?\n")


def _without_original_body(raw: bytes) -> bytes:
    """A delivery report cut after the headers of the original message it quotes.

    Only those headers matter (who it was sent to); the original's body - often the whole
    invoice with its PDF - is most of the parsing work. Other messages are left whole: a
    report forwarded inside ordinary mail is read from the attached message.
    """
    head_end = BLANK_LINE_RE.search(raw, 0, 65536)
    if not head_end:
        return raw
    # As long as raw, with "\n" in front: index i + 1 here is index i in raw.
    lowered = b"\n" + raw.lower()
    if not REPORT_TYPE_RE.search(lowered, 0, head_end.start() + 1):
        return raw
    part = ORIGINAL_PART_RE.search(lowered, head_end.end())
    if not part:
        return raw
    status_part = STATUS_PART_RE.search(lowered, part.end())
    if status_part:
        # The status fields come after the quoted original: keep everything.
        return raw
    part_headers_end = BLANK_LINE_RE.search(raw, part.end() - 1)
    if not part_headers_end:
        return raw
    inner_headers_end = BLANK_LINE_RE.search(raw, part_headers_end.end())
    if not inner_headers_end:
        return raw
    return raw[: inner_headers_end.end()]


LONG_LINE_RE = re.compile(f"[^\\n]{{{MAX_LINE_CHARS + 1}}}")


def _parse_message(msg: Message, depth: int = 0) -> ParsedReport:
    subject = fold(_header(msg, "Subject")) or ""
    from_header = _header(msg, "From")
    sender = extract_address(from_header)
    found = _walk(msg)

    # ARF complaints: report-type=feedback-report or a feedback part, or Hotmail's JMRP form.
    if found.feedback_texts or found.report_type == "feedback-report":
        return _feedback_report(msg, found, subject, sender)
    if (
        any(original.get("X-HmXmrOriginalRecipient") for original in found.original_headers)
        and not found.dsn_texts
    ):
        return _feedback_report(msg, found, subject, sender)

    dsn_facts: list[DeliveryFacts] = []
    for text in found.dsn_texts:
        dsn_facts.extend(_facts_from_blocks(parse_field_blocks(text)))
    if not dsn_facts:
        for text in found.human_texts:
            if ("ecipient" in text or "ECIPIENT" in text) and FINAL_RECIPIENT_RE.search(text):
                dsn_facts.extend(_facts_from_blocks(parse_field_blocks(text)))

    # Real bounce prose has short lines; clipping absurd ones keeps every line regex cheap.
    # With status fields, the prose only adds context, which its first lines give.
    human = "\n".join(found.human_texts)[
        : MAX_DSN_PROSE_CHARS if dsn_facts else MAX_PROSE_CHARS * 2
    ]
    if LONG_LINE_RE.search(human):
        human = "\n".join(line[:MAX_LINE_CHARS] for line in human.splitlines())
    elif "\r" in human:
        human = "\n".join(human.splitlines())
    explanation = _cut_at_original(human)[:MAX_PROSE_CHARS]

    failed_header = _header(msg, "X-Failed-Recipients")
    daemon = _is_daemon_sender(from_header) or _is_daemon_sender(_header(msg, "Sender"))
    bounce_subject = bool(BOUNCE_SUBJECT_RE.search(subject))

    if dsn_facts and any(f.recipient is None for f in dsn_facts):
        # A mangled Final-Recipient ("@mx.example.org"): the prose part usually names it.
        excluded = {addr for addr in (sender, extract_address(_header(msg, "To"))) if addr}
        prose = [addr for addr, _ in _text_recipients(explanation, excluded)]
        prose += [addr for addr in _original_recipients(found, human) if addr not in prose]
        fixed: list[DeliveryFacts] = []
        for facts in dsn_facts:
            if facts.recipient is None and prose:
                facts = replace(facts, recipient=prose.pop(0))
            fixed.append(facts)
        dsn_facts = fixed

    if dsn_facts:
        return ParsedReport(
            kind="dsn",
            recipients=tuple(dsn_facts),
            subject=subject,
            sender=sender,
            text=explanation,
            mta="rfc3464",
        )

    ses = _ses_notification(explanation)
    if ses:
        return ParsedReport(
            kind="dsn", recipients=ses, subject=subject, sender=sender, text="", mta="amazonses"
        )

    head = explanation[:4000]
    # The boolean checks below use lower-case patterns on lower-cased text (faster).
    head_lower = head.lower()
    subject_lower = subject.lower()
    if not failed_header and CHALLENGE_RE.search(f"{subject_lower}\n{head_lower}"):
        # A challenge/response system holds the message until the sender proves itself.
        return ParsedReport(kind="none", subject=subject, sender=sender, text=explanation)

    # Writers name themselves in their first lines; a shorter text keeps this pass cheap.
    family = detect_mta(_header_digest(msg).lower(), head_lower[:2000])
    # Headers only say who wrote the message; its opening prose says it is a bounce.
    recognised = (
        family is not None
        and family.body is not None
        and family.name not in ("japanese", "appliance")
        and bool(family.body.search(head_lower))
    )
    if not (
        daemon
        or bounce_subject
        or failed_header
        or recognised
        or found.report_type == "delivery-status"
    ):
        return _forwarded_or_auto_reply(msg, found, subject, sender, explanation, depth)
    if not BOUNCE_PHRASE_RE.search(fold(head_lower) or "") and not failed_header and not recognised:
        return _forwarded_or_auto_reply(msg, found, subject, sender, explanation, depth)

    excluded = {addr for addr in (sender, extract_address(_header(msg, "To"))) if addr}
    pairs: list[tuple[str, str]] = []
    if failed_header:
        for chunk in failed_header.split(","):
            address = extract_address(chunk)
            if address:
                block = ""
                idx = explanation.lower().find(address)
                if idx >= 0:
                    block = _block_after(explanation, idx + len(address))
                pairs.append((address, block))
    if not pairs and family is not None:
        pairs = _family_recipients(family, explanation, {sender} if sender else set())
    if not pairs:
        pairs = _text_recipients(explanation, excluded)
    if not pairs:
        pairs = [(address, "") for address in _original_recipients(found, human)[:1]]
    if not pairs:
        # Last resort: the first address the explanation names that is not ours.
        for match in ADDRESS_RE.finditer(explanation, 0, 8000):
            address = match.group(0).strip(".'\"").lower()
            if address not in excluded and "." in address.rpartition("@")[2]:
                pairs = [(address, _line_around(explanation, match.start()))]
                break
    if not pairs:
        return ParsedReport(
            kind="text", subject=subject, sender=sender, text=explanation, warnings=("no-rcpt",)
        )

    # A delay notice says the server is still trying; only a report that also says it gave
    # up is a failure.
    delayed = bool(
        DELAY_RE.search(head_lower) or DELAY_SUBJECT_RE.search(subject_lower)
    ) and not bool(PERMANENT_RE.search(head_lower))
    code_line = _code_line(explanation)
    facts = []
    for address, block in pairs[:MAX_RECIPIENTS]:
        diagnostic = fold(re.sub(r"^[ \t]*[-=_*#|]{4,}[ \t]*$", "", block, flags=re.M))
        if not (find_status(diagnostic) or find_reply_code(diagnostic)):
            # The recipient's own lines only name it; the server's answer is elsewhere:
            # beside a later mention of the address (Exchange), or on the report's code line.
            diagnostic = _coded_block(explanation, address) or code_line or diagnostic
        if not diagnostic:
            diagnostic = _reason_line(explanation)
        facts.append(
            DeliveryFacts(
                recipient=address,
                diagnostic=diagnostic,
                action="delayed" if delayed else None,
            )
        )
    return ParsedReport(
        kind="text",
        recipients=tuple(facts),
        subject=subject,
        sender=sender,
        text=explanation,
        mta=family.name if family else None,
    )


DELAY_SUBJECT_RE = re.compile(
    r"delay|warning: could not send|still (?:being )?retr|not yet been delivered|"
    r"delivery status notification \(delay\)|temporar"
)
PERMANENT_RE = re.compile(
    r"permanent (?:fatal )?error|given up|giving up|failed permanently|permanent failure|"
    r"no further (?:delivery )?attempts|will not be retried|could not be delivered to "
    r"one or more|was not delivered|has been returned|retry time(?:out)? (?:exceeded|reached)"
)
REASON_LINE_RE = re.compile(
    r"^.*(?:unknown|no such|not found|does not exist|doesn't exist|invalid|full|quota|"
    r"exceed|too (?:large|big)|refused|rejected|denied|blocked|spam|expired|timed? ?out|"
    r"unavailable|disabled|suspended|delayed|unreachable|not (?:accepted|deliverable)).*$",
    re.IGNORECASE | re.MULTILINE,
)


def _line_around(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start : end if end >= 0 else len(text)]


def _coded_block(text: str, address: str) -> str | None:
    """The explanation after a mention of ``address`` that quotes a server's code."""
    lower = text.lower()
    start = lower.find(address)
    for _ in range(5):
        if start < 0:
            return None
        block = _block_after(text, start + len(address))
        if CODE_LINE_RE.search(block):
            return fold(block)
        start = lower.find(address, start + len(address))
    return None


def _reason_line(text: str) -> str | None:
    """The first line of prose that names a cause, for reports that quote no server reply."""
    match = REASON_LINE_RE.search(text, 0, 6000)
    return fold(match.group(0)[:500]) if match else None


# The headers that tell one bounce writer from another (see mta.MTA_FAMILIES).
DIGEST_HEADERS = frozenset(
    {
        "from",
        "subject",
        "x-mailer",
        "x-failed-recipients",
        "x-ml-server",
        "x-mlserver",
        "list-software",
        "x-mimetrack",
        "x-zohomail",
    }
)


def _header_digest(msg: Message) -> str:
    """The report's telling headers as "name: value" lines, for recognising its writer."""
    lines: list[str] = []
    received = 0
    for key, value in _header_items(msg)[:80]:
        name = str(key).lower()
        if name == "received":
            # Only the newest hop is the reporting server's; qmail names itself there.
            received += 1
            if received > 2:
                continue
        elif name not in DIGEST_HEADERS:
            continue
        lines.append(f"{name}: {str(value)[:300]}")
    return "\n".join(lines)


def _family_recipients(family: MtaFamily, text: str, excluded: set[str]) -> list[tuple[str, str]]:
    """(recipient, explanation) pairs by ``family``'s own patterns, in document order."""
    found: list[tuple[int, int, str]] = []
    verdicts: dict[str, str] = {}
    seen: set[str] = set()
    for pattern in family.recipients:
        for match in pattern.finditer(text):
            address = match.group("addr").strip(".'\"<>").lower()
            if address in seen or address in excluded:
                continue
            seen.add(address)
            found.append((match.start(), match.end(), address))
            groups = match.groupdict()
            if groups.get("why") is not None:
                why = groups["why"].strip()
                # "554 <a@b>... 550 Host unknown": the remote server's own code is inside.
                code = "" if re.match(r"[245]\d\d\b", why) else groups.get("code") or ""
                verdicts[address] = f"{code} {why}".strip()
            if len(found) >= MAX_RECIPIENTS:
                break
        if found:
            # The first pattern that finds anything is the family's own layout.
            break
    found.sort()
    # Each entry ends where the next one starts (the last, where the text does).
    stops = [start for start, _, _ in found[1:]] + [len(text)]
    return [
        (address, verdicts[address] if address in verdicts else _block_after(text, end, stop))
        for (_, end, address), stop in zip(found, stops, strict=False)
    ]


VERP_LOCAL_RE = re.compile(
    r"^[^@+=]+[+-](?P<local>[^@+=]+)=(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})$"
)


def _verp_recipient(msg: Message) -> str | None:
    """The recipient encoded in a VERP envelope address (``list+user=example.com@host``).

    The bounce is delivered to the address we sent from, so the address it was delivered
    to (Delivered-To, X-Original-To, Envelope-To, else To) carries the recipient we sent to.
    """
    index = _header_index(msg)
    for name in ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to"):
        value = index.get(name)
        if value is None or "=" not in str(value):
            continue  # a VERP address always has its "="
        address = extract_address(_header(msg, name))
        if not address:
            continue
        local = address.rpartition("@")[0]
        match = VERP_LOCAL_RE.match(local)
        if match:
            return f"{match.group('local')}@{match.group('domain')}".lower()
    return None


def _prefer_recipient(report: ParsedReport, address: str) -> ParsedReport:
    """Put the facts about ``address`` first; name it when the report named nobody."""
    recipients = list(report.recipients)
    for index, facts in enumerate(recipients):
        if (facts.recipient or "").lower() == address:
            recipients.insert(0, recipients.pop(index))
            return replace(report, recipients=tuple(recipients))
    if len(recipients) == 1:
        recipients[0] = replace(recipients[0], recipient=address)
        return replace(report, recipients=tuple(recipients))
    return report


SES_RE = re.compile(r'"notificationType"\s*:\s*"Bounce"')


SES_RECIPIENT_RE = re.compile(r"\{[^{}]*\"emailAddress\"[^{}]*\}")
SES_FIELD_RE = re.compile(
    r'"(emailAddress|status|diagnosticCode|action)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)


def _ses_notification(text: str) -> tuple[DeliveryFacts, ...]:
    """Amazon SES bounce notifications mailed as JSON (through SNS or directly).

    Read field by field rather than as one JSON document: SNS wraps long lines, which
    breaks the document but not the recipients' fields.
    """
    if not SES_RE.search(text[:20000]):
        return ()
    temporary = bool(re.search(r'"bounceType"\s*:\s*"Transient"', text[:20000]))
    start = text.find('"bouncedRecipients"')
    end = text.find("]", start)
    if start < 0 or end < 0:
        return ()
    facts: list[DeliveryFacts] = []
    for item in SES_RECIPIENT_RE.finditer(text, start, end + 1):
        fields = dict(SES_FIELD_RE.findall(item.group(0)))
        address = extract_address(fields.get("emailAddress"))
        if not address:
            continue
        diagnostic = fields.get("diagnosticCode") or ""
        if re.match(r"^\s*smtp\s*;", diagnostic, re.IGNORECASE):
            diagnostic = diagnostic.split(";", 1)[1]
        facts.append(
            DeliveryFacts(
                recipient=address,
                action="delayed" if temporary else (fields.get("action") or "failed"),
                status=find_status(fields.get("status")),
                diagnostic=fold(diagnostic),
            )
        )
    return tuple(facts[:MAX_RECIPIENTS])


def _forwarded_or_auto_reply(
    msg: Message,
    found: _Collected,
    subject: str,
    sender: str | None,
    explanation: str,
    depth: int,
) -> ParsedReport:
    """A report someone forwarded as an attachment is read as the report it carries."""
    if depth < 2:
        for inner in found.original_headers[:3]:
            if not (
                _is_daemon_sender(_header(inner, "From"))
                or BOUNCE_SUBJECT_RE.search(_header(inner, "Subject"))
            ):
                continue
            report = _parse_message(inner, depth + 1)
            if report.kind in ("dsn", "text") and report.recipients:
                return report
    return _maybe_auto_reply(msg, subject, sender, explanation)


BOUNDARY_LINE_RE = re.compile(r"^--([^\s]{1,200}?)(?:--)?[ \t]*$", re.MULTILINE)


def _repair_boundary(raw: bytes, msg: Message) -> Message:
    """Re-parse a multipart whose declared boundary never occurs in the body.

    Anonymised or hand-edited bounces often keep the parts but mangle the boundary
    parameter; the body's own delimiter lines tell us the real one.
    """
    if not _content_type(msg).startswith("multipart/") or msg.is_multipart():
        return msg
    body = msg.get_payload()
    declared = msg.get_boundary()
    if not isinstance(body, str) or not declared:
        return msg
    counts: dict[str, int] = {}
    for match in BOUNDARY_LINE_RE.finditer(body[: MAX_TEXT_CHARS * 4]):
        candidate = match.group(1)
        counts[candidate] = counts.get(candidate, 0) + 1
    if not counts:
        return msg
    best = max(counts, key=lambda key: counts[key])
    if counts[best] < 2 or best == declared:
        return msg
    old = declared.encode("utf-8", "surrogateescape")
    if old not in raw:
        return msg
    repaired = raw.replace(old, best.encode("utf-8", "surrogateescape"), 1)
    fixed = mime.message_from_bytes(repaired)
    return fixed if fixed.is_multipart() else msg


CODE_LINE_RE = re.compile(
    r"^.*(?:(?<![\w.])[45]\d\d[ -]|(?<![\w.])[45]\.\d{1,3}\.\d{1,3}(?![\w.]*\d)).*$", re.M
)


FULL_CODE_LINE_RE = re.compile(
    r"^.*(?<![\w.])[45]\d\d[ -]+[45]\.\d{1,3}\.\d{1,3}(?![\w.]*\d).*$", re.M
)


def _code_line(text: str) -> str | None:
    """The first line quoting an SMTP reply (with its enhanced status, if any line has both)."""
    match = FULL_CODE_LINE_RE.search(text) or CODE_LINE_RE.search(text)
    return fold(match.group(0)) if match else None


ORIGINAL_TO_RE = re.compile(r"^[ \t]*To:[ \t]*(.+)$", re.MULTILINE | re.IGNORECASE)


def _original_recipients(found: _Collected, human: str) -> list[str]:
    """Recipients of the quoted original message: the attached headers, else quoted text."""
    addresses: list[str] = []
    for original in found.original_headers:
        address = extract_address(_header(original, "To"))
        if address and address not in addresses:
            addresses.append(address)
    if not addresses:
        match = ORIGINAL_MARKER_RE.search(human)
        if match:
            to_line = ORIGINAL_TO_RE.search(human, match.end(), match.end() + 20000)
            address = extract_address(to_line.group(1)) if to_line else None
            if address:
                addresses.append(address)
    return addresses


def _feedback_report(
    msg: Message, found: _Collected, subject: str, sender: str | None
) -> ParsedReport:
    recipients: list[DeliveryFacts] = []
    feedback_type = None
    for text in found.feedback_texts:
        for block in parse_field_blocks(text):
            feedback_type = feedback_type or fold(block.get("feedback-type"))
        for line in text.splitlines():
            match = FIELD_RE.match(line)
            if match and match.group(1).lower() in ("original-rcpt-to", "removal-recipient"):
                address = extract_address(match.group(2))
                if address and all(r.recipient != address for r in recipients):
                    recipients.append(DeliveryFacts(recipient=address))
    if not recipients:
        for original in found.original_headers:
            for name in ("X-HmXmrOriginalRecipient", "To", "Delivered-To"):
                address = extract_address(_header(original, name))
                if address:
                    recipients.append(DeliveryFacts(recipient=address))
                    break
            if recipients:
                break
    return ParsedReport(
        kind="feedback",
        recipients=tuple(recipients),
        subject=subject,
        sender=sender,
        feedback_type=(feedback_type or "abuse").lower(),
    )


def _maybe_auto_reply(
    msg: Message, subject: str, sender: str | None, explanation: str
) -> ParsedReport:
    if _is_daemon_sender(_header(msg, "From")):
        # Mail systems mark their bounces auto-replied too; from a daemon it is no vacation.
        return ParsedReport(kind="none", subject=subject, sender=sender, text=explanation)
    auto_submitted = _header(msg, "Auto-Submitted").strip().lower()
    precedence = _header(msg, "Precedence").strip().lower()
    auto = (
        auto_submitted.startswith("auto-replied")
        or bool(_header(msg, "X-Autoreply") or _header(msg, "X-Autorespond"))
        or precedence == "auto_reply"
        or bool(AUTO_REPLY_SUBJECT_RE.search(subject))
    )
    if auto:
        facts = (DeliveryFacts(recipient=sender),) if sender else ()
        return ParsedReport(
            kind="auto_reply", recipients=facts, subject=subject, sender=sender, text=explanation
        )
    return ParsedReport(kind="none", subject=subject, sender=sender, text=explanation)
