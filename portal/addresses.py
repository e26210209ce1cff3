"""Email addresses as people type them: split a pasted list, validate each, suggest fixes.

Errors name the offending character and its position, in the user's language, because
"invalid email" alone leaves an accountant staring at an address that looks fine (a
non-breaking space or a zero-width character copied from a spreadsheet is invisible).
"""

from __future__ import annotations

import contextlib
import difflib
import re
import unicodedata
from dataclasses import dataclass

import dns.resolver
import email_validator
from django.conf import settings
from django.utils.translation import gettext as _

from portal.dns import make_resolver

# Characters that mail servers and ESPs refuse, or that only ever appear by copy-paste mistake.
FORBIDDEN_CHARACTERS = '\\/":<>|*\u00b4`~^'  # \u00b4: the acute accent
_SEPARATORS = re.compile(r"[;,\r\n]+")

# Well-known mailbox providers, for "did you mean" suggestions.
COMMON_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "yandex.com",
    "mail.com",
    "zoho.com",
    "yahoo.es",
    "hotmail.es",
    "wp.pl",
    "onet.pl",
    "o2.pl",
    "interia.pl",
    "yahoo.ro",
    "online.no",
    "suomi24.fi",
)
# Typos seen often enough to name directly; anything else goes through a similarity match.
KNOWN_TYPOS = {
    "gmial.com": "gmail.com",
    "gmai.com": "gmail.com",
    "gamil.com": "gmail.com",
    "gnail.com": "gmail.com",
    "gmail.co": "gmail.com",
    "gmail.con": "gmail.com",
    "gmal.com": "gmail.com",
    "hotmial.com": "hotmail.com",
    "hotmal.com": "hotmail.com",
    "hotmail.co": "hotmail.com",
    "hotmail.con": "hotmail.com",
    "outlok.com": "outlook.com",
    "outlook.co": "outlook.com",
    "outlook.con": "outlook.com",
    "yahooo.com": "yahoo.com",
    "yaho.com": "yahoo.com",
    "yahoo.co": "yahoo.com",
    "icloud.co": "icloud.com",
    "iclod.com": "icloud.com",
}


class AddressError(ValueError):
    """An address that cannot be used, with a message fit to show the person who typed it."""

    def __init__(self, address: str, message: str, *, code: str) -> None:
        super().__init__(message)
        self.address = address
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ValidAddress:
    address: str  # as it should be stored and shown: trimmed, domain lower-cased (Unicode)
    normalized: str  # for matching: lower-cased local part, ASCII (IDNA) domain
    suggestion: str | None = None  # "did you mean" for a likely domain typo


def split_addresses(text: str) -> list[str]:
    """Split `a@x.com; b@y.com`, commas or one per line into trimmed, non-empty items."""
    items = (_strip(part) for part in _SEPARATORS.split(text or ""))
    return [item for item in items if item]


def _strip(value: str) -> str:
    # str.strip() already removes NBSP and most Unicode spaces; zero-width ones are not
    # whitespace to Python, yet they are invisible at the ends of a pasted address too.
    return value.strip().strip("\u200b\u200c\u200d\u2060\ufeff").strip()


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".strip()


def _is_invisible(char: str) -> bool:
    category = unicodedata.category(char)
    # Cf: format characters (zero-width, direction marks); Zs/Zl/Zp: spaces other than " ";
    # Cc: control characters (tab, newline inside an address).
    return category in ("Cf", "Zl", "Zp", "Cc") or (category == "Zs" and char != " ")


def check_characters(address: str) -> None:
    """Raise AddressError naming the first character no address may contain."""
    for position, char in enumerate(address, start=1):
        if char in FORBIDDEN_CHARACTERS:
            raise AddressError(
                address,
                _(
                    "“%(address)s” contains the character %(char)s at position %(position)d, "
                    "which email addresses cannot contain."
                )
                % {"address": address, "char": char, "position": position},
                code="forbidden_character",
            )
        if char == " ":
            raise AddressError(
                address,
                _(
                    "“%(address)s” contains a space at position %(position)d. "
                    "Remove the space, or separate addresses with a semicolon."
                )
                % {"address": address, "position": position},
                code="space",
            )
        if _is_invisible(char):
            raise AddressError(
                address,
                _(
                    "“%(address)s” contains an invisible character (%(char)s) at position "
                    "%(position)d, often copied from a document or spreadsheet. "
                    "Type the address again by hand."
                )
                % {
                    "address": address.encode("ascii", "replace").decode(),
                    "char": _describe(char),
                    "position": position,
                },
                code="invisible_character",
            )


def suggest_domain(domain: str) -> str | None:
    """A likely intended provider domain for a mistyped one, or None."""
    domain = domain.lower()
    if domain in COMMON_DOMAINS:
        return None
    if domain in KNOWN_TYPOS:
        return KNOWN_TYPOS[domain]
    close = difflib.get_close_matches(domain, COMMON_DOMAINS, n=1, cutoff=0.88)
    return close[0] if close else None


def validate_address(raw: str, *, check_deliverability: bool | None = None) -> ValidAddress:
    """Validate one address; raise AddressError with a message for the person who typed it."""
    address = _strip(raw)
    if not address:
        raise AddressError(raw, _("The email address is empty."), code="empty")
    check_characters(address)
    if address.count("@") != 1:
        code = "missing_at" if "@" not in address else "several_at"
        message = (
            _("“%(address)s” is missing the @ sign.")
            if code == "missing_at"
            else _(
                "“%(address)s” contains more than one @ sign. Separate addresses with a semicolon."
            )
        )
        raise AddressError(address, message % {"address": address}, code=code)
    local, domain = address.rsplit("@", 1)
    if not local:
        raise AddressError(
            address,
            _("“%(address)s” has nothing before the @ sign.") % {"address": address},
            code="empty_local",
        )
    if "." not in domain.strip("."):
        raise AddressError(
            address,
            _(
                "“%(address)s” has no complete domain after the @ sign (for example "
                "name@example.com)."
            )
            % {"address": address},
            code="incomplete_domain",
        )
    if check_deliverability is None:
        check_deliverability = settings.ADDRESS_CHECK_DELIVERABILITY
    try:
        result = email_validator.validate_email(
            address,
            check_deliverability=check_deliverability,
            dns_resolver=_resolver() if check_deliverability else None,
        )
    except email_validator.EmailUndeliverableError as exc:
        raise AddressError(
            address,
            _(
                "The domain of “%(address)s” does not accept email (%(detail)s). Check the "
                "spelling of the part after the @ sign."
            )
            % {"address": address, "detail": exc},
            code="undeliverable",
        ) from exc
    except email_validator.EmailNotValidError as exc:
        raise AddressError(
            address,
            _("“%(address)s” is not a valid email address (%(detail)s).")
            % {"address": address, "detail": exc},
            code="invalid",
        ) from exc
    ascii_domain = (result.ascii_domain or result.domain).lower()
    return ValidAddress(
        address=f"{result.local_part}@{result.domain.lower()}",
        normalized=f"{result.local_part.lower()}@{ascii_domain}",
        suggestion=_suggestion(result.local_part, ascii_domain),
    )


def clean_address_field(value: str) -> str:
    """The one check behind every form field taking an address (Django forms, allauth's
    sign-up and add-email forms, invitations, firm settings): `validate_address` without
    the DNS look-up, as a Django ValidationError. Unlike Django's EmailField it refuses
    bidi overrides (U+202E), other format and invisible characters, and what mail servers
    refuse. Returns the address as it should be stored."""
    from django.core.exceptions import ValidationError

    try:
        return validate_address(value, check_deliverability=False).address
    except AddressError as exc:
        raise ValidationError(exc.message, code=exc.code) from exc


def _suggestion(local: str, domain: str) -> str | None:
    better = suggest_domain(domain)
    return f"{local}@{better}" if better else None


def normalize_address(address: str) -> str:
    """The matching form of an address already accepted (case-insensitive, ASCII domain)."""
    local, _sep, domain = address.strip().rpartition("@")
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return f"{local.lower()}@{domain.lower()}"


def _resolver() -> dns.resolver.Resolver:
    return make_resolver()
