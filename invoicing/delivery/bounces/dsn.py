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
import email
import re
from dataclasses import dataclass, field, replace
from email import policy
from email.header import decode_header, make_header
from email.message import Message

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
MAX_HEADER_CHARS = 8 * 1024
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
    r"\u9001\u4fe1\u3067\u304d\u307e\u305b\u3093",  # Japanese: "could not be sent"
    re.IGNORECASE,
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
    folded = WS_RE.sub(" ", text).strip()
    return folded or None


def extract_address(value: str | None) -> str | None:
    """Return the first address in ``value``, lower-cased, without brackets or type prefix."""
    if not value:
        return None
    # An address is at most 254 characters; bounding the input keeps the search linear.
    value = value[:MAX_ADDRESS_FIELD]
    # "rfc822; user@example.com" - the address type is noise for us.
    if ";" in value:
        head, _, tail = value.partition(";")
        if "@" not in head or "@" in tail:
            value = tail
    bracketed = re.search(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>", value)
    match = ADDRESS_RE.search(bracketed.group(1) if bracketed else value)
    if not match:
        return None
    address = match.group(0).strip(".'\"").lower()
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        return None
    return address


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


def _header(msg: Message, name: str) -> str:
    """A header as text, RFC 2047-decoded where possible; '' when absent or undecodable."""
    try:
        value = msg.get(name)
    except Exception:  # compat32 header objects can fail on undecodable bytes
        return ""
    if value is None:
        return ""
    text = str(value)[:MAX_HEADER_CHARS]
    if "=?" in text:
        # Undecodable encoded-words (bad charset, broken base64) keep their raw form.
        with contextlib.suppress(Exception):
            text = str(make_header(decode_header(text)))
    return text


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:  # RFC 2045: a broken Content-Type means text/plain
        return "text/plain"


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
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:  # a mangled charset parameter; utf-8 with replacement is safest
        charset = "utf-8"
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
        for key in ("final-recipient", "original-recipient", "x-actual-recipient"):
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
    try:
        found.report_type = str(msg.get_param("report-type") or "").lower()
    except Exception:  # unparsable parameters: treat as no report type
        found.report_type = ""
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
                found.original_headers.append(email.message_from_string(inner[:MAX_TEXT_CHARS]))
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
            disposition = (part.get("Content-Disposition") or "").lower()
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
    r"^[ \t]*(?:[-*]|\d+\.|to:|recipient:)?[ \t]*[\"'<]?"
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)"
    r"[\"'>]?[ \t]*(?::|\.\.\.|\s|$)(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
LEAD_IN_RE = re.compile(
    r"(?<![\w.@-])(?:delivering your mail to|"
    r"deliver(?:ed)? (?:your )?message to(?: the following)?(?: address)?"
    r"|delivery to the following recipients? (?:failed|has been delayed)[^:\n]*"
    r"|could not be delivered to|unable to deliver (?:message )?to|undeliverable to|"
    r"following (?:recipient|address)(?:\(s\)|es)?[^:\n]{0,40}|"
    r"failed recipient|original-recipient|recipient address|rcpt to|"
    r"message to|not delivered to|for|to)(?![\w@])[: \t]*<?"
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)",
    re.IGNORECASE,
)


def _cut_at_original(text: str) -> str:
    match = ORIGINAL_MARKER_RE.search(text)
    if match and match.start() > 0:
        return text[: match.start()]
    # Without a marker, the quoted headers usually start with a Received/Return-Path line.
    match = re.search(r"^(?:Return-Path|Received|Return-path|DKIM-Signature):", text, re.M)
    if match and match.start() > 0:
        return text[: match.start()]
    return text


def _block_after(text: str, start: int) -> str:
    """The text from ``start`` up to the next blank line (a recipient's explanation)."""
    rest = text[start : start + 1500]
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
    for match in ADDRESS_LINE_RE.finditer(text):
        if len(found) >= MAX_RECIPIENTS:
            break
        add(match.group(1), match.group(2) + "\n" + _block_after(text, match.end()))
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
    raw = bytes(raw[:MAX_MESSAGE_BYTES])
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    msg = _repair_boundary(raw, msg)
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

    # Real bounce prose has short lines; clipping absurd ones keeps every line regex cheap.
    human = "\n".join(line[:MAX_LINE_CHARS] for line in "\n".join(found.human_texts).splitlines())
    explanation = _cut_at_original(human)[:MAX_TEXT_CHARS]

    dsn_facts: list[DeliveryFacts] = []
    for text in found.dsn_texts:
        dsn_facts.extend(_facts_from_blocks(parse_field_blocks(text)))
    if not dsn_facts:
        for text in found.human_texts:
            if FINAL_RECIPIENT_RE.search(text):
                dsn_facts.extend(_facts_from_blocks(parse_field_blocks(text)))

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
        )

    if not (daemon or bounce_subject or failed_header or found.report_type == "delivery-status"):
        return _maybe_auto_reply(msg, subject, sender, explanation)
    if not BOUNCE_PHRASE_RE.search(fold(explanation) or "") and not failed_header:
        return _maybe_auto_reply(msg, subject, sender, explanation)

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
    if not pairs:
        pairs = _text_recipients(explanation, excluded)
    if not pairs:
        pairs = [(address, "") for address in _original_recipients(found, human)[:1]]
    if not pairs:
        return ParsedReport(
            kind="text", subject=subject, sender=sender, text=explanation, warnings=("no-rcpt",)
        )

    code_line = _code_line(explanation)
    facts = []
    for address, block in pairs[:MAX_RECIPIENTS]:
        diagnostic = fold(re.sub(r"^[ \t]*[-=_*#|]{4,}[ \t]*$", "", block, flags=re.M))
        if code_line and not (find_status(diagnostic) or find_reply_code(diagnostic)):
            # The recipient's own lines only name it; the server's answer is elsewhere.
            diagnostic = code_line
        facts.append(DeliveryFacts(recipient=address, diagnostic=diagnostic))
    return ParsedReport(
        kind="text", recipients=tuple(facts), subject=subject, sender=sender, text=explanation
    )


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
    fixed = email.message_from_bytes(repaired, policy=policy.compat32)
    return fixed if fixed.is_multipart() else msg


CODE_LINE_RE = re.compile(
    r"^.*(?:(?<![\w.])[45]\d\d[ -]|(?<![\w.])[45]\.\d{1,3}\.\d{1,3}(?![\w.]*\d)).*$", re.M
)


def _code_line(text: str) -> str | None:
    """The first line quoting an SMTP reply or enhanced status code."""
    match = CODE_LINE_RE.search(text)
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
