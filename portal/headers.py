"""Text that goes into an email header (subjects, display names): one line, also decoded.

A value can hide a line break inside an RFC 2047 encoded word:
``=?utf-8?q?Invoice=0D=0ABcc=3A_x@evil.test?=`` has none as typed, but the email package's
modern policy decodes encoded words when a header is set, and some Python patch releases
then write the decoded CR LF out as a real ``Bcc:`` header. Whether that happens must not
depend on the Python release, so every header value is checked here in each form a mail
library may turn it into (as typed, RFC 2047-decoded by ``email.header`` and by the
modern policy's parser, repeatedly), and any line separator or control character in any
form is refused (`check_header_text`, for forms and for builders that can report an error)
or flattened (`header_text`, for builders that must still send, such as invoice emails).
"""

from __future__ import annotations

import contextlib
import unicodedata
from email import _header_value_parser as parser
from email.header import decode_header, make_header

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

__all__ = [
    "HeaderTextError",
    "check_header_text",
    "clean_header_field",
    "header_text",
    "validate_header_text",
]

# Decoding twice is enough for any value a mail library decodes once; a few more rounds
# cost nothing and cover nested encodings.
_MAX_ROUNDS = 4


class HeaderTextError(ValueError):
    """A header value holding a line break or control character (maybe encoded)."""

    def __init__(self, value: str, char: str) -> None:
        self.value = value
        self.char = char
        if char in value:
            message = _("This must be a single line.")
        else:
            message = _(
                "This must be a single line: it hides a line break or control character "
                "(%(char)s) in an encoded word (=?…?=)."
            ) % {"char": f"U+{ord(char):04X}"}
        super().__init__(message)


def _forbidden(char: str) -> bool:
    # Cc: CR, LF, NUL, VT, FF, NEL, the file/group/record separators...; Zl/Zp: U+2028 and
    # U+2029. A tab is ordinary folding white space in a header.
    if char == "\t":
        return False
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def _decoded(value: str) -> list[str]:
    """``value`` as the email package's two decoders would turn it into text."""
    forms = []
    with contextlib.suppress(LookupError, UnicodeError, ValueError, AssertionError):
        forms.append(str(make_header(decode_header(value))))
    # The parser's errors are not one class; a value it cannot parse is not decoded by it.
    with contextlib.suppress(Exception):
        forms.append(str(parser.get_unstructured(value)))
    return forms


def _all_forms(value: str) -> list[str]:
    forms = [value]
    pending = [value]
    for _round in range(_MAX_ROUNDS):
        fresh = []
        for text in pending:
            if "=?" not in text:
                continue
            for form in _decoded(text):
                if form not in forms:
                    forms.append(form)
                    fresh.append(form)
        if not fresh:
            break
        pending = fresh
    return forms


def _first_forbidden(value: str) -> str | None:
    for form in _all_forms(value):
        for char in form:
            if _forbidden(char):
                return char
    return None


def check_header_text(value: str) -> str:
    """``value`` unchanged if it is safe in a header; raises `HeaderTextError` otherwise."""
    char = _first_forbidden(str(value))
    if char is not None:
        raise HeaderTextError(str(value), char)
    return str(value)


def header_text(value: object) -> str:
    """``value`` made safe for a header: one line of text, never refused.

    Runs of white space (any line break included) become one space. A value whose decoded
    form hides a line break or control character is replaced by that decoded form with
    them turned into spaces, so nothing is left for a mail library to decode into a header.
    """
    text = " ".join(str(value).split())
    if "=?" not in text and not any(_forbidden(char) for char in text):
        return text  # the usual case, kept fast for bulk invoice sending
    if _first_forbidden(text) is None:
        return text
    for _round in range(_MAX_ROUNDS):
        forms = _decoded(text) if "=?" in text else []
        decoded = forms[-1] if forms else text
        cleaned = "".join(" " if _forbidden(char) else char for char in decoded)
        cleaned = " ".join(cleaned.split())
        if cleaned == text:
            break
        text = cleaned
    # Whatever encoded word survived the rounds is defused: "=?" no longer starts one.
    return text.replace("=?", "= ?") if _first_forbidden(text) is not None else text


def validate_header_text(value: str) -> None:
    """Django validator for form fields whose value ends up in a header."""
    try:
        check_header_text(value)
    except HeaderTextError as exc:
        raise ValidationError(str(exc), code="line_break") from exc


def clean_header_field(value: str) -> str:
    """A form's ``clean_<field>`` for header text: the value trimmed, or ValidationError."""
    validate_header_text(value)
    return value.strip()
