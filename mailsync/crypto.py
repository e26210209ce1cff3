"""Mailbox secrets encrypted at rest with Fernet (MultiFernet for key rotation).

Keys come from ``settings.MAILSYNC_FERNET_KEYS`` (newest first). In DEBUG without keys a
development key is derived from SECRET_KEY so the embedded run works out of the box; with
DEBUG off and no key, `encrypt` raises `CredentialsUnavailable` at the moment a person tries
to save a mailbox, instead of refusing to start the whole portal.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.translation import gettext_lazy as _

__all__ = ["CredentialsUnavailable", "decrypt", "encrypt", "rotate"]


class CredentialsUnavailable(Exception):
    """No usable encryption key: mailbox credentials cannot be stored or read."""


def _keys() -> list[bytes]:
    keys = [key.encode() for key in settings.MAILSYNC_FERNET_KEYS]
    if not keys and settings.DEBUG:
        digest = hashlib.sha256(f"mailsync:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(digest)]
    if not keys:
        raise CredentialsUnavailable(
            _(
                "Mailbox credentials cannot be saved: the portal has no encryption key. "
                "An administrator must set MAILSYNC_FERNET_KEYS."
            )
        )
    return keys


def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in _keys()])
    except ValueError as exc:
        # Never echo the key itself.
        raise CredentialsUnavailable(
            _("MAILSYNC_FERNET_KEYS holds a value that is not a Fernet key.")
        ) from exc


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except InvalidToken as exc:
        raise CredentialsUnavailable(
            _("The stored mailbox credentials cannot be read with the configured keys.")
        ) from exc


def rotate(token: str) -> str:
    """The same secret encrypted with the newest key (older keys must still be configured)."""
    return _fernet().rotate(token.encode("ascii")).decode("ascii")
