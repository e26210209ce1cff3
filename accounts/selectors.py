from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import Invitation, Membership, User
from portal.models import Firm

SESSION_FIRM_KEY = "firm_id"


def membership_for_request(request: HttpRequest) -> Membership | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    memberships = Membership.objects.select_related("firm").filter(user=user).order_by("created")
    wanted = request.session.get(SESSION_FIRM_KEY)
    chosen = None
    for membership in memberships:
        if chosen is None or membership.firm_id == wanted:
            chosen = membership
    return chosen


def members_of(firm: Firm) -> QuerySet[Membership]:
    return Membership.objects.filter(firm=firm).select_related("user").order_by("user__email")


def member_choices(firm: Firm) -> list[tuple[int, str]]:
    """The firm's members as a filter's options, by email: (user id, the name ``User``
    shows itself by), read as four columns rather than every member's whole user row."""
    return [
        (user_id, User.shown_as(first, last, email))
        for user_id, first, last, email in Membership.objects.filter(firm=firm)
        .order_by("user__email")
        .values_list("user_id", "user__first_name", "user__last_name", "user__email")
    ]


def open_invitations_of(firm: Firm) -> QuerySet[Invitation]:
    return Invitation.objects.filter(firm=firm, accepted_at=None, revoked_at=None)


def user_by_email(email: str) -> User | None:
    return User.objects.filter(email__iexact=email).first()
