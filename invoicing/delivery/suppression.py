"""Suppression: why an address is blocked, and lifting the block.

An address is blocked per firm (`Suppression`) by `suppression_rules_apply`, which every
delivery event passes through (`invoicing.delivery.events.delivery_event_record`): a hard
bounce, a spam complaint, or repeated temporary failures. The sender checks the list when a
delivery is written (`invoicing.delivery.outbox`) and again when it claims it
(`invoicing.delivery.sender`). An owner lifts a block, within a daily limit, with an audit
entry (`suppression_remove_audited`); the row stays as history.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import ngettext

from accounts.models import AuditEntry, SupportGrant, User
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.invoices import InvoiceError
from invoicing.selectors import suppression_removal_times
from portal.models import Firm

S = Delivery.Status


def suppression_rules_apply(delivery: Delivery, event: DeliveryEvent) -> None:
    """Block the address when this event says so: a hard bounce, a spam complaint, or
    settings.SUPPRESS_AFTER_SOFT_BOUNCES temporary failures within
    settings.SUPPRESS_SOFT_BOUNCE_DAYS. Called by `delivery_event_record` for every event,
    whatever its source (SMTP refusal, ESP webhook, DSN)."""
    if delivery.is_test:
        return
    reason = None
    if event.kind == S.BOUNCED:
        reason = Suppression.Reason.HARD_BOUNCE
    elif event.kind == S.COMPLAINED:
        reason = Suppression.Reason.COMPLAINT
    elif event.kind == S.SOFT_BOUNCED and _soft_bounces_in_window(delivery) >= (
        settings.SUPPRESS_AFTER_SOFT_BOUNCES
    ):
        reason = Suppression.Reason.REPEATED_SOFT
    if reason is None:
        return
    _, created = Suppression.objects.get_or_create(
        firm_id=delivery.firm_id,
        normalized=delivery.normalized,
        removed_at=None,
        defaults={"reason": reason, "source_event": event},
    )
    if created and reason == Suppression.Reason.REPEATED_SOFT:
        Delivery.objects.filter(pk=delivery.pk).update(
            problem_code="delivery.blocked_repeated_failures"
        )
        # Kept in step in memory too: a caller holding the lock may skip the re-read.
        delivery.problem_code = "delivery.blocked_repeated_failures"


def _soft_bounces_in_window(delivery: Delivery) -> int:
    since = timezone.now() - timedelta(days=settings.SUPPRESS_SOFT_BOUNCE_DAYS)
    return (
        DeliveryEvent.objects.filter(
            delivery__firm_id=delivery.firm_id,
            delivery__normalized=delivery.normalized,
            delivery__is_test=False,
            kind=S.SOFT_BOUNCED,
            occurred_at__gte=since,
        )
        .values("delivery_id")
        .distinct()
        .count()
    )


def active_suppression(*, firm_id: int, normalized: str) -> Suppression | None:
    return Suppression.objects.filter(
        firm_id=firm_id, normalized=normalized, removed_at=None
    ).first()


def active_suppressions(*, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Suppression]:
    """The active suppression of each (firm id, normalized address): one query for a batch."""
    wanted = set(pairs)
    if not wanted:
        return {}
    found = Suppression.objects.filter(
        firm_id__in={firm_id for firm_id, _ in wanted},
        normalized__in={normalized for _, normalized in wanted},
        removed_at=None,
    )
    return {(s.firm_id, s.normalized): s for s in found if (s.firm_id, s.normalized) in wanted}


def suppression_remove(*, suppression: Suppression, removed_by: User, note: str) -> bool:
    """Lift a block after the owner confirmed the address works; the row stays as history."""
    return bool(
        Suppression.objects.filter(pk=suppression.pk, removed_at=None).update(
            removed_at=timezone.now(), removed_by=removed_by, removal_note=note
        )
    )


class SuppressionRemovalLimitReached(InvoiceError):
    """The firm unblocked as many addresses as it may in 24 hours; ``retry_at`` says when
    the next removal is allowed."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


def suppression_remove_audited(
    *,
    suppression: Suppression,
    removed_by: User,
    note: str,
    grant: SupportGrant | None = None,
    method: str = "POST",
    path: str = "",
) -> bool:
    """Lift a block within the firm's daily limit and audit it, all in one transaction.

    settings.SUPPRESSION_REMOVALS_PER_DAY per firm in any 24 hours: mail to dead addresses
    hurts the firm's sending reputation, so a hurried or hijacked session cannot empty the
    list. The firm's row is locked first, so two owners unblocking at the same moment are
    counted one after the other and cannot both slip under the limit. ``grant`` is the support
    access the owner acts under, if any; ``method`` and ``path`` the request, for the audit
    log. Returns False when the block was lifted already; raises
    `SuppressionRemovalLimitReached` (nothing changed) when the limit is reached.
    """
    limit = settings.SUPPRESSION_REMOVALS_PER_DAY
    with transaction.atomic():
        firm = Firm.objects.select_for_update().get(pk=suppression.firm_id)
        now = timezone.now()
        times = suppression_removal_times(firm=firm, since=now - timedelta(days=1))
        if len(times) >= limit:
            # The next removal is allowed once the oldest counted one is a day old.
            oldest = times[len(times) - limit] if limit > 0 else now
            retry_at = oldest + timedelta(days=1)
            raise SuppressionRemovalLimitReached(
                ngettext(
                    "Your firm can unblock only %(count)d address in 24 hours. Try again after "
                    "%(time)s: what you typed is kept below.",
                    "Your firm can unblock only %(count)d addresses in 24 hours. Try again after "
                    "%(time)s: what you typed is kept below.",
                    limit,
                )
                % {
                    "count": limit,
                    "time": date_format(timezone.localtime(retry_at), "SHORT_DATETIME_FORMAT"),
                },
                retry_at,
            )
        if not suppression_remove(suppression=suppression, removed_by=removed_by, note=note):
            return False
        AuditEntry.objects.create(
            firm=firm,
            grant=grant,
            actor=removed_by,
            kind=AuditEntry.Kind.SUPPRESSION_REMOVED,
            method=method,
            path=path[:500],
            # Named here, not read from the request's resolver_match: after re-authentication
            # allauth replays the request from its sign-in view.
            view_name="invoicing:suppression_remove",
            object_ref=suppression.normalized[:200],
            status_code=302,
        )
    return True
