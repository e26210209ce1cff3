"""Emails about accounts: one function per email, three templates each."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils import translation

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


def _owners(firm) -> list:
    from accounts.models import Membership, Role

    return [
        m.user for m in Membership.objects.filter(firm=firm, role=Role.OWNER).select_related("user")
    ]


def _to_owners(name: str, *, firm, context: dict[str, object]) -> None:
    # Each owner gets the email in their own language.
    for owner in _owners(firm):
        with translation.override(owner.language or settings.LANGUAGE_CODE):
            send_templated(name, to=[owner.email], firm=firm, context={**context, "owner": owner})


def _grant_context(grant) -> dict[str, object]:
    return {
        "firm": grant.firm,
        "grant": grant,
        "link": settings.SITE_URL + reverse("accounts:editor_access"),
    }


def send_support_access_granted_email(*, grant) -> None:
    _to_owners("support-access-granted", firm=grant.firm, context=_grant_context(grant))


def send_support_access_first_used_email(*, grant, support_user) -> None:
    context = {**_grant_context(grant), "support_user": support_user}
    _to_owners("support-access-first-used", firm=grant.firm, context=context)


def send_support_access_expired_email(*, grant) -> None:
    _to_owners("support-access-expired", firm=grant.firm, context=_grant_context(grant))
