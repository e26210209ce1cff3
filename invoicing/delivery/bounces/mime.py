"""A fast reader for the MIME structure of bounces, giving the same tree as compat32.

``email.message_from_bytes(raw, policy=compat32)`` reads a message line by line in Python,
checking every line against every enclosing boundary; on a typical bounce (an HTML
explanation, a logo, the quoted original) that is about half of the time ``classify_bounce``
spends (issue #12 asks it to be faster than flufl.bounce, which pays for the same parser).

This reader finds boundaries with one compiled search per multipart and slices the text, and
builds the very ``email.message.Message`` objects the feedparser would: the same headers (as
``policy.compat32.header_source_parse`` makes them), the same payload strings, the same
nesting. It handles only well-formed structure; anything the feedparser would have to repair
(a missing boundary, a header block without its blank line, a bare CR line ending, an mbox
``From`` line, a digest) raises :class:`Unusual` and the caller falls back to the stdlib,
so odd mail is read exactly as before.

One deliberate difference: a ``message/delivery-status`` part keeps its field text as a
string instead of one pseudo-message per field block; ``dsn._delivery_status_text`` reads
both, and the string is what it would rebuild. Parts with undeclared 8-bit bytes there go to
the stdlib, whose header objects decode them differently.
"""

from __future__ import annotations

import email
import re
from email import policy
from email.message import Message

__all__ = ["Unusual", "message_from_bytes", "message_from_string"]

# The feedparser's own test for a header or continuation line (email.feedparser.headerRE).
HEADER_LINE_RE = re.compile(r"(?:[\041-\071\073-\176]*:|[\t ])")
HEADER_END_RE = re.compile(r"\n\r?\n")
# A header block with nothing the feedparser would treat specially: each line a field
# ("name:", no mbox "From " line) or a continuation, and no line break str.splitlines knows
# but the feedparser does not (those go through the line-by-line path below).
_LINE = "[^\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]*"
WELL_FORMED_HEADERS_RE = re.compile(
    rf"(?:[\041-\071\073-\176]+:{_LINE}(?:\n|\Z)(?:[ \t]{_LINE}(?:\n|\Z))*)+"
)
# "; boundary=value" or '; boundary="value"' with nothing compat32 would unquote or decode.
SIMPLE_BOUNDARY_RE = re.compile(
    r';\s*boundary\s*=\s*(?:"([^"\\<]*)"|([^\s;"\\<]+))\s*(?:;|\Z)', re.IGNORECASE
)
FIELD_RE = re.compile(r"^([\041-\071\073-\176]+):[ \t]*(.*(?:\n[ \t].*)*)", re.MULTILINE)
BARE_CR_RE = re.compile(r"\r(?!\n)")
SURROGATE_RE = re.compile("[\udc80-\udcff]")
# Deeper than any real bounce; the stdlib takes over (and its RecursionError is handled).
MAX_DEPTH = 40
DELIVERY_STATUS = "message/delivery-status"


class Unusual(ValueError):
    """Structure this reader leaves to the stdlib parser."""


def message_from_bytes(raw: bytes) -> Message:
    """``raw`` parsed as ``email.message_from_bytes(raw, policy=compat32)`` would."""
    text = raw.decode("ascii", "surrogateescape")  # what BytesFeedParser does first
    try:
        return _read(text)
    except Unusual:
        return email.message_from_bytes(raw, policy=policy.compat32)


def message_from_string(text: str) -> Message:
    """``text`` parsed as ``email.message_from_string(text)`` would."""
    try:
        return _read(text)
    except Unusual:
        return email.message_from_string(text, policy=policy.compat32)


def _read(text: str) -> Message:
    if "\r" in text and BARE_CR_RE.search(text):
        # The feedparser also ends lines at a lone CR; boundary searches here do not.
        raise Unusual("bare CR")
    return _message(text, 0, len(text), 0, len(text))


def _message(text: str, start: int, end: int, depth: int, full_end: int) -> Message:
    """The message (or body part) in ``text[start:end]``.

    ``full_end`` is ``end`` before an enclosing multipart dropped the line break that
    belongs to its delimiter.
    """
    if depth > MAX_DEPTH:
        raise Unusual("too deep")
    msg = Message()
    body = _headers(msg, text, start, end)
    ctype = msg.get_content_type()
    maintype = ctype.partition("/")[0]
    if ctype == DELIVERY_STATUS:
        payload = text[body:end]
        if SURROGATE_RE.search(payload):
            raise Unusual("8-bit delivery status")
        msg._payload = payload
    elif maintype == "message":
        msg._payload = [_message(text, body, end, depth + 1, full_end)]
    elif maintype == "multipart":
        msg._payload = _parts(msg, ctype, text, body, end, depth, full_end)
    else:
        msg._payload = text[body:end]
    return msg


def _headers(msg: Message, text: str, start: int, end: int) -> int:
    """Read the header block at ``start`` into ``msg``; return where the body starts."""
    if start < end and text[start] == "\n":
        return start + 1  # no headers at all, just the separating blank line
    if text.startswith("\r\n", start, end):
        return start + 2
    blank = HEADER_END_RE.search(text, start, end)
    if blank:
        block_end, body = blank.start() + 1, blank.end()
    else:
        block_end = body = end  # headers only, up to the end of the part
    block = text[start:block_end]
    if WELL_FORMED_HEADERS_RE.fullmatch(block):
        # The usual case in two C-level passes: every line a field or its continuation.
        # The pattern reads fields as policy.compat32.header_source_parse does, except
        # that it leaves the CR of a CRLF line ending on the value.
        fields = FIELD_RE.findall(block)
        if "\r" in block:
            fields = [(name, value.removesuffix("\r")) for name, value in fields]
        msg._headers = fields
        return body
    lines = block.splitlines(keepends=True)
    if not lines:
        return body
    if len(lines) != block.count("\n") + (not block.endswith("\n")):
        # str.splitlines also breaks at \v, \f, \x1c-\x1e, \x85, U+2028...; the feedparser
        # does not.
        raise Unusual("unusual line breaks in headers")
    if lines[0].startswith("From "):
        # An mbox envelope line; the feedparser keeps it aside, as here.
        start += len(lines[0])
        msg.set_unixfrom(lines.pop(0).rstrip("\r\n"))
    headers = msg._headers
    current: list[str] = []
    for index, line in enumerate(lines):
        if line[0] == ":" or line.startswith("From "):
            raise Unusual("a header line the feedparser skips")
        if not HEADER_LINE_RE.match(line):
            # No blank line before the body (anonymised or broken mail): like the
            # feedparser, the body starts at the first line that is no header.
            body = start + sum(map(len, lines[:index]))
            break
        if line[0] in " \t":
            if not current:
                raise Unusual("continuation first")
            current.append(line)
            continue
        if current:
            headers.append(_header(current))
        current = [line]
    if current:
        headers.append(_header(current))
    return body


def _header(lines: list[str]) -> tuple[str, str]:
    # policy.compat32.header_source_parse, inlined
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    return name, value.rstrip("\r\n")


def _parts(
    msg: Message, ctype: str, text: str, start: int, end: int, depth: int, full_end: int
) -> list[Message] | str:
    """The body parts of a multipart (its text, when they cannot be told apart)."""
    if ctype == "multipart/digest":
        raise Unusual("digest parts default to message/rfc822")
    boundary = _boundary(msg)
    # An empty boundary is still one to the feedparser: its delimiter is a bare "--".
    match = _delimiter(text, "--" + boundary, start, end) if boundary is not None else None
    if match is None or match[2]:
        # As the feedparser: a multipart whose parts cannot be found is one text payload
        # (dsn._repair_boundary looks for the boundary the body really uses), and it keeps
        # the line break before an enclosing delimiter.
        if match is None and start >= end and not text.endswith(("\n\n", "\n\r\n"), 0, end):
            return ""  # the dropped line break ended the headers; no body at all
        return text[start : match[0] if match else full_end]
    parts: list[Message] = []
    while True:
        part_start = match[1]
        following = _delimiter(text, "--" + boundary, part_start, end)
        if following is not None and following[0] == part_start:
            raise Unusual("repeated boundary lines")
        part_end = following[0] if following is not None else end
        # RFC 2046: the line break before a delimiter belongs to the delimiter (and the
        # feedparser drops a last line break at a missing close delimiter too).
        # The feedparser drops only one, however many multiparts end there unclosed.
        trim = following is not None or end == full_end
        if trim and part_end > part_start and text[part_end - 1] == "\n":
            part_end -= 1
            if part_end > part_start and text[part_end - 1] == "\r":
                part_end -= 1
        part_full_end = following[0] if following is not None else full_end
        parts.append(_message(text, part_start, part_end, depth + 1, part_full_end))
        if following is None or following[2]:
            return parts
        match = following


def _boundary(msg: Message) -> str | None:
    """``msg.get_boundary()``, read directly when the parameter is plainly written.

    compat32's parameter parser (quotes, RFC 2231 continuations and charsets) is a good
    part of this reader's time; the boundary is almost always ``; boundary="..."`` or a
    bare token, and anything else (or anything ambiguous) still goes to it.
    """
    value = None
    for name, field_value in msg._headers:
        if name.lower() == "content-type":
            value = field_value
            break
    if (
        isinstance(value, str)
        and value.lower().count("boundary") == 1
        and "*" not in value
        and value.count('"') in (0, 2)
        and not SURROGATE_RE.search(value)
    ):
        match = SIMPLE_BOUNDARY_RE.search(value)
        if match and (match.group(1) is not None or '"' not in value):
            quoted, token = match.groups()
            return (quoted if quoted is not None else token).rstrip()
    return msg.get_boundary()


def _delimiter(text: str, separator: str, start: int, end: int) -> tuple[int, int, bool] | None:
    """The next delimiter line in ``text[start:end]``: (its start, its end, is it the close).

    A plain substring search: boundaries are unique per message, so a compiled pattern per
    boundary would cost more to compile than to run. The line must hold only the delimiter,
    an optional "--", and blanks, as feedparser's boundary pattern has it.
    """
    position = start
    while True:
        found = text.find(separator, position, end)
        if found < 0:
            return None
        if found == 0 or text[found - 1] == "\n":
            cursor = found + len(separator)
            close = text.startswith("--", cursor, end)
            if close:
                cursor += 2
            while cursor < end and text[cursor] in " \t":
                cursor += 1
            if cursor == end:
                return found, cursor, close
            if text[cursor] == "\n":
                return found, cursor + 1, close
            if text.startswith("\r\n", cursor, end):
                return found, cursor + 2, close
        position = found + 1
