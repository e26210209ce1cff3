"""The weekly problems email: each owner hears about the firm's problems, each member about
their own mailboxes, on Monday morning in the firm's time zone.

It says what is new since last week, what resolved itself (listed as open last week, gone
now) and what is still open, each with a link to where it is fixed, in the recipient's
language. A week with nothing open sends nothing. A `DigestSent` row per recipient per ISO
week, inserted in the transaction that sends, makes the hourly task idempotent: run twice,
or by two workers at once, one email goes out.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone, translation

from accounts.models import Membership, Role, User
from portal.emails import send_templated
from portal.models import Firm
from troubleshooting.models import DigestSent
from troubleshooting.selectors import Problem, problems_for_firm

logger = logging.getLogger(__name__)

# Monday (weekday 0) from this hour, local time. The task runs hourly: a firm whose 08:00 run
# was missed (a worker down) still gets its email later that Monday, never twice.
DIGEST_WEEKDAY = 0
DIGEST_HOUR = 8
# A problem first seen within this long is "new" in a first email (no earlier one to compare).
NEW_WITHIN = datetime.timedelta(days=7)
# Standing notes rather than failures (mail not linked to a client, folders left out of
# sync): they stay on the dashboard; an email about them would come every week and soon go
# unread, so they alone send nothing.
STANDING_NOTES = frozenset({"sync.not_linked", "sync.labels_excluded"})


@dataclass
class Digest:
    new: list[dict] = field(default_factory=list)
    resolved: list[dict] = field(default_factory=list)
    still_open: list[dict] = field(default_factory=list)

    @property
    def open(self) -> list[dict]:
        return self.new + self.still_open


def _link(problem: Problem) -> str:
    if problem.client is not None:
        path = reverse("troubleshooting:client_problems", args=[problem.client.pk])
    elif problem.connection is not None and problem.connection.owner_id is not None:
        path = reverse("troubleshooting:dashboard") + f"?member={problem.connection.owner_id}"
    else:
        path = reverse("troubleshooting:dashboard")
    return settings.SITE_URL + path


def _entry(problem: Problem) -> dict:
    who = problem.client.display_name if problem.client is not None else problem.address
    return {
        "subject": problem.subject,
        "code": problem.code,
        "who": who,
        "link": _link(problem),
    }


def _titled(entries: list[dict]) -> list[dict]:
    """Entries with their guide's title in the active language (stored entries have none)."""
    from troubleshooting.catalogue import guide_for

    titled = []
    for entry in entries:
        guide = guide_for(entry["code"])
        titled.append({**entry, "title": str(guide.title) if guide else entry["code"]})
    return titled


def problems_for_recipient(*, user: User, role: str, problems: list[Problem]) -> list[Problem]:
    """An owner's digest covers the firm; a member's, the mailboxes that are theirs."""
    if role == Role.OWNER:
        return problems
    return [p for p in problems if p.connection is not None and p.connection.owner_id == user.pk]


def digest_build(
    *, problems: list[Problem], previous: DigestSent | None, now: datetime.datetime
) -> Digest:
    earlier = {entry["subject"]: entry for entry in previous.problems} if previous else {}
    digest = Digest()
    for problem in problems:
        entry = _entry(problem)
        if problem.subject in earlier or (not previous and problem.first_seen < now - NEW_WITHIN):
            digest.still_open.append(entry)
        else:
            digest.new.append(entry)
    current = {problem.subject for problem in problems}
    digest.resolved = [entry for subject, entry in earlier.items() if subject not in current]
    return digest


def digest_send(
    *,
    firm: Firm,
    user: User,
    role: str,
    problems: list[Problem],
    now: datetime.datetime | None = None,
) -> bool:
    """Send this week's email to ``user`` unless it went already or nothing is open.
    Returns whether this call sent it."""
    now = now or timezone.now()
    year, week, _day = now.astimezone(firm.tzinfo()).isocalendar()
    previous = (
        DigestSent.objects.filter(firm=firm, user=user)
        .exclude(iso_year=year, iso_week=week)
        .order_by("-sent_at")
        .first()
    )
    mine = problems_for_recipient(user=user, role=role, problems=problems)
    digest = digest_build(problems=mine, previous=previous, now=now)
    if not digest.open:
        return False
    with translation.override(user.language or settings.LANGUAGE_CODE):
        context = {
            "firm": firm,
            "user": user,
            "new": _titled(digest.new),
            "resolved": _titled(digest.resolved),
            "still_open": _titled(digest.still_open),
            "open_count": len(digest.open),
            "dashboard": settings.SITE_URL + reverse("troubleshooting:dashboard"),
            "settings_link": settings.SITE_URL + reverse("accounts:my_account"),
        }
        try:
            with transaction.atomic():
                DigestSent.objects.create(
                    firm=firm, user=user, iso_year=year, iso_week=week, problems=digest.open
                )
                # Sent inside the transaction: if the mail server refuses, no marker stays
                # and the next hourly run tries again.
                send_templated("problems-digest", to=[user.email], firm=firm, context=context)
        except IntegrityError:
            return False  # another run sent this week's already
    return True


def firm_is_due(firm: Firm, now: datetime.datetime) -> bool:
    local = now.astimezone(firm.tzinfo())
    return local.weekday() == DIGEST_WEEKDAY and local.hour >= DIGEST_HOUR


def firms_due_for_digest(now: datetime.datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return [firm.pk for firm in Firm.objects.only("pk", "time_zone") if firm_is_due(firm, now)]


def firm_digests_send(*, firm: Firm, now: datetime.datetime | None = None) -> int:
    """This week's email to every member of ``firm`` who wants one and has not had it;
    returns how many were sent."""
    now = now or timezone.now()
    if not firm_is_due(firm, now):
        return 0
    year, week, _day = now.astimezone(firm.tzinfo()).isocalendar()
    done = set(
        DigestSent.objects.filter(firm=firm, iso_year=year, iso_week=week).values_list(
            "user_id", flat=True
        )
    )
    members = [
        m
        for m in Membership.objects.filter(
            firm=firm, user__is_active=True, user__problems_digest=True
        ).select_related("user")
        if m.user_id not in done
    ]
    if not members:
        return 0
    problems = [p for p in problems_for_firm(firm) if p.code not in STANDING_NOTES]
    sent = 0
    for membership in members:
        try:
            if digest_send(
                firm=firm, user=membership.user, role=membership.role, problems=problems, now=now
            ):
                sent += 1
        except Exception:
            # One refused recipient must not keep the others from theirs; no marker was
            # kept for this one, so the next hourly run tries again.
            logger.exception(
                "problems digest to user %s of firm %s failed", membership.user_id, firm.pk
            )
    return sent
