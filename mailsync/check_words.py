"""A failed account check in plain words, with the problem guide that explains it.

The server's own reply ("[Errno -2] Name or service not known", "[AUTHENTICATIONFAILED]") is
kept for whoever supports the member, but the member reads what it means and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse
from django.utils.translation import gettext as _

from mailsync.errors import (
    AUTH_FAILED,
    CONNECTION,
    INSUFFICIENT_SCOPE,
    PROTOCOL_UNSUPPORTED,
    SERVER_SETTINGS,
    TWO_FACTOR,
    SyncError,
)

SMTP_STEPS = frozenset({"smtp_connect", "smtp_tls", "smtp_login"})
# What resolvers say when a host name does not exist (glibc, musl, Windows, macOS).
NAME_NOT_FOUND = (
    "name or service not known",
    "errno -2",
    "errno -3",
    "errno -5",
    "nodename nor servname",
    "no address associated",
    "getaddrinfo failed",
    "temporary failure in name resolution",
)


@dataclass(frozen=True)
class PlainFailure:
    message: str
    guide_url: str  # the problem guide's link


def plain_failure(error: SyncError, *, host: str = "") -> PlainFailure:
    """What went wrong in the member's words, and where the guide for it is."""
    message = _message(error, host)
    if error.step in SMTP_STEPS:
        message = _("Sending (SMTP): %(problem)s") % {"problem": message}
    # By URL only: nothing imports `troubleshooting` (DESIGN.md). Each code has its guide,
    # anchored by the code, on the guides page.
    return PlainFailure(message, f"{reverse('troubleshooting:guides')}#{error.code}")


def _message(error: SyncError, host: str) -> str:
    detail = (error.detail or "").lower()
    if error.step in ("connect", "smtp_connect") and any(s in detail for s in NAME_NOT_FOUND):
        return _(
            "The server name %(host)s does not exist. Check its spelling (for example "
            "imap.example.com), or choose your email provider from the list."
        ) % {"host": host or "?"}
    if error.step in ("tls", "smtp_tls"):
        return _(
            "A secure connection could not be set up. Check the port and the security "
            "setting: SSL/TLS is usually port 993 (465 for sending), STARTTLS port 143 (587)."
        )
    if error.code == AUTH_FAILED:
        return _(
            "The server refused the user name or password. Check both (the user name is "
            "often the whole email address); with two-step verification, use an app password."
        )
    if error.code == TWO_FACTOR:
        return _(
            "This account uses two-step verification, so the server refuses the normal "
            "password. Create an app password in the account's security settings and use it."
        )
    if error.code == INSUFFICIENT_SCOPE:
        return _("The portal was not given every permission it needs: connect again and allow all.")
    if error.code == PROTOCOL_UNSUPPORTED:
        return _(
            "The server does not offer this kind of access, or it is switched off for the "
            "account. Switch on IMAP (or POP3) in the email settings, or choose the other kind."
        )
    if error.code == CONNECTION:
        return _(
            "The portal could not reach the server. Check the server name, the port and the "
            "security setting; if they are right, the server may be down: try again later."
        )
    if error.code == SERVER_SETTINGS:
        return _(
            "The server did not answer as a mail server should. Check the server name, port "
            "and security with your email provider."
        )
    return _("The test did not pass. Check the settings and try again.")
