"""Emails mailsync sends to members about their mailboxes."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils import translation

from accounts.models import Membership, Role
from mailsync.models import MailboxConnection
from portal.emails import send_templated


def _recipients(connection: MailboxConnection) -> list:
    """The member whose mailbox it is; the firm's owners for the shared mailbox."""
    if connection.owner is not None:
        return [connection.owner]
    return [
        m.user
        for m in Membership.objects.filter(firm=connection.firm, role=Role.OWNER).select_related(
            "user"
        )
    ]


def send_reauth_needed_email(*, connection: MailboxConnection) -> None:
    link = settings.SITE_URL + reverse("mailsync:credentials") + f"?connection={connection.pk}"
    if connection.kind in (MailboxConnection.Kind.GMAIL, MailboxConnection.Kind.MICROSOFT):
        link = settings.SITE_URL + reverse("accounts:my_account")
    for user in _recipients(connection):
        # Each person reads it in their own language.
        with translation.override(user.language or settings.LANGUAGE_CODE):
            send_templated(
                "mailbox-reauth-needed",
                to=[user.email],
                firm=connection.firm,
                context={
                    "connection": connection,
                    "address": connection.email_address,
                    "reply": connection.problem_detail,
                    "link": link,
                },
            )
