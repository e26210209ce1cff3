from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import Invitation, Membership, User
from portal import joined_rows
from portal.models import Firm

SESSION_FIRM_KEY = "firm_id"


# The membership a request acts for, with its firm: every request of a member reads it.
_MEMBERSHIP_PARTS = (
    joined_rows.Part(Membership, "m", ("user", "firm", "role", "created")),
    joined_rows.Part(Firm, "f"),
)


def membership_for_request(request: HttpRequest) -> Membership | None:
    """The signed-in user's membership in the firm the session picked, else their first
    (the oldest), with its firm. Our own SQL (portal.joined_rows): every request of a
    member runs it, and the queryset (``select_related``, then the choice in Python) cost
    as much Python as the rest of a bare view's request."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    wanted = request.session.get(SESSION_FIRM_KEY)
    rows = joined_rows.select_from(
        _MEMBERSHIP_PARTS,
        f"FROM {Membership._meta.db_table} m JOIN {Firm._meta.db_table} f ON f.id = m.firm_id"
        " WHERE m.user_id = %s"
        " ORDER BY CASE WHEN m.firm_id = %s THEN 0 ELSE 1 END, m.created, m.id LIMIT 1",
        [user.pk, wanted if isinstance(wanted, int) else None],
    )
    if not rows:
        return None
    membership, firm = rows[0]
    Membership.firm.field.set_cached_value(membership, firm)
    return membership


def members_of(firm: Firm) -> QuerySet[Membership]:
    return Membership.objects.filter(firm=firm).select_related("user").order_by("user__email")


# What a filter's option shows of a member.
_MEMBER_PARTS = (joined_rows.Part(User, "u", ("pk", "first_name", "last_name", "email")),)


def member_choices(firm: Firm) -> list[tuple[int, str]]:
    """The firm's members as a filter's options, by email: (user id, the name ``User``
    shows itself by). Our own SQL (portal.joined_rows): the Problems pages show this filter
    on every view, and the queryset across the membership cost 0.5 ms of Python to build."""
    members = joined_rows.values_from(
        _MEMBER_PARTS,
        f"FROM {Membership._meta.db_table} m JOIN {User._meta.db_table} u ON u.id = m.user_id"
        " WHERE m.firm_id = %s ORDER BY u.email, u.id",
        [firm.pk],
    )
    return [(pk, User.shown_as(first, last, email)) for pk, first, last, email in members]


def open_invitations_of(firm: Firm) -> QuerySet[Invitation]:
    return Invitation.objects.filter(firm=firm, accepted_at=None, revoked_at=None)


def user_by_email(email: str) -> User | None:
    return User.objects.filter(email__iexact=email).first()
