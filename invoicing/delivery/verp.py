"""VERP: a Return-Path of its own for every delivery, so a bounce names the delivery it is about.

With plain SMTP the only reliable link between a bounce and the email that caused it is the
envelope sender: the receiving side sends its DSN there, whatever it does to the headers.
``bounces@bounce.example`` becomes ``bounces+<token>@bounce.example`` for one delivery; the
bounce mailbox reads the token back out of the address the DSN was delivered to.
"""

from __future__ import annotations

import re
import secrets
from email.utils import parseaddr

from django.conf import settings

from invoicing.delivery.models import Delivery

# What a token may look like (URL-safe base64 or hex). New tokens are lower-case hex because
# some MTAs fold the local part of the address they deliver to.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,40}")


def new_verp_token() -> str:
    """A fresh token for `Delivery.verp_token`: 128 random bits, lower-case hex."""
    return secrets.token_hex(16)


def verp_address(delivery: Delivery) -> str:
    """The envelope sender for ``delivery``, or "" when no bounce address is configured.

    An empty result means: send with the backend's usual envelope sender (ESP setups learn
    about bounces from webhooks instead).
    """
    base = settings.BOUNCE_ADDRESS
    if not base or not delivery.verp_token:
        return ""
    local, _, domain = base.rpartition("@")
    return f"{local}+{delivery.verp_token}@{domain}"


def verp_token_from(address: str | None) -> str | None:
    """The delivery token in ``address`` if it is one of our VERP addresses, else None.

    Accepts the forms headers carry it in: bare, in angle brackets, or with a display name.
    """
    base = settings.BOUNCE_ADDRESS
    if not address or not base:
        return None
    _, parsed = parseaddr(address.strip())
    local, _, domain = parsed.rpartition("@")
    base_local, _, base_domain = base.rpartition("@")
    if not local or domain.lower() != base_domain.lower():
        return None
    prefix, plus, token = local.partition("+")
    if not plus or prefix.lower() != base_local.lower():
        return None
    return token if _TOKEN_RE.fullmatch(token) else None
