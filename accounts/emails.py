"""Emails about accounts: one function per email, three templates each."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from accounts.models import Invitation
from portal.emails import send_templated


def send_invitation_email(*, invitation: Invitation, token: str) -> None:
    link = settings.SITE_URL + reverse("accounts:invitation_accept", args=[token])
    send_templated(
        "invitation",
        to=[invitation.email],
        firm=invitation.firm,
        context={
            "firm": invitation.firm,
            "invited_by": invitation.invited_by,
            "role": invitation.get_role_display(),
            "link": link,
            "expires_at": invitation.expires_at,
        },
    )
