"""Everything that happens to a delivery goes through `delivery_event_record`.

SMTP-time refusals, ESP webhooks and DSN bounces all become `DeliveryEvent` rows here, in
one transaction with the delivery locked, so the three sources can race without losing an
event or moving a delivery backwards. Every event then passes the rules that put an address
on the suppression list (`invoicing.delivery.suppression`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from invoicing.delivery.bounces import classify_failure
from invoicing.delivery.bounces.dsn import address_domain
from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.delivery.suppression import suppression_rules_apply

S = Delivery.Status

# How strong each outcome is. A delivery's status only ever moves to a stronger one, so an
# ESP's late "delivered" cannot hide an earlier bounce, and events arriving out of order
# give the same result as in order.
RANK = {
    S.QUEUED: 0,
    # Above queued, so no event (an ESP's "queued") can put a claimed delivery back in the
    # queue to be claimed and sent a second time; every real outcome outranks both.
    S.SENDING: 1,
    S.UNKNOWN: 1,
    S.SENT: 2,
    S.DEFERRED: 3,
    S.SOFT_BOUNCED: 4,
    S.DELIVERED: 5,
    S.OPENED: 6,
    S.CLICKED: 7,
    S.FAILED: 8,
    S.SUPPRESSED: 8,
    S.CANCELLED: 8,
    S.REJECTED: 9,
    S.BOUNCED: 10,
    S.COMPLAINED: 11,
}

# Fine-grained causes (from the bounce rules) that mean the address or domain is wrong.
ADDRESS_REASONS = {"userunknown", "hasmoved", "notaccept"}
DOMAIN_REASONS = {"hostunknown"}
POLICY_REASONS = {"blocked", "rejected", "policyviolation", "securityerror", "norelaying"}
SPAM_REASONS = {"spamdetected", "virusdetected", "contenterror"}


@dataclass(frozen=True)
class Outcome:
    """What one server reply means for a delivery: our decision, not the sender's label."""

    kind: str  # a Delivery.Status value
    reason: str  # fine-grained cause
    problem_code: str  # "" when nothing is wrong


def classify_reply(
    reply_code: str | None,
    status_code: str | None,
    diagnostic: str | None,
    *,
    command: str | None = None,
    recipient: str | None = None,
) -> Outcome:
    """Decide hard/soft/policy for an SMTP reply or a bounce's status and text.

    Address failures (5.1.x, unknown user, no such domain) are hard; mailbox full, too
    large, greylisting and every 4.x.x are soft; policy and spam blocks are "rejected by
    policy". Anything not recognised is soft, because calling an address dead on a guess
    would block a client who is reachable.
    """
    reason = classify_failure(
        status_code or None,
        reply_code or None,
        diagnostic or None,
        command,
        # The recipient's provider reads its own error codes (see bounces.server_codes).
        recipient_domain=address_domain(recipient),
    )
    permanent = (status_code or "").startswith("5") or (
        not status_code and (reply_code or "").startswith("5")
    )
    if not permanent:
        # 4.x.x: full mailbox, greylisting, a busy server. Retried; never a block on its own.
        return Outcome(S.SOFT_BOUNCED, reason, "delivery.soft_bounce")
    if reason in DOMAIN_REASONS and permanent:
        return Outcome(S.BOUNCED, reason, "delivery.invalid_address")
    # Only a recognised address failure is hard: 5.1.x also covers "sender rejected" (5.1.8)
    # and "too many recipients", which say nothing about the client's address.
    if reason in ADDRESS_REASONS and permanent:
        return Outcome(S.BOUNCED, reason, "delivery.hard_bounce")
    if reason in POLICY_REASONS | SPAM_REASONS or (
        permanent and (status_code or "").startswith("5.7.")
    ):
        return Outcome(S.REJECTED, reason, "delivery.rejected_policy")
    return Outcome(S.SOFT_BOUNCED, reason, "delivery.soft_bounce")


PROBLEM_FOR_KIND = {
    S.COMPLAINED: "delivery.complaint",
    S.SUPPRESSED: "delivery.suppressed",
    S.FAILED: "delivery.not_sent_rejected_document",
}


def delivery_event_record(
    *,
    delivery: Delivery,
    kind: str,
    source: str,
    event_id: str = "",
    occurred_at: datetime | None = None,
    reply_code: str = "",
    status_code: str = "",
    reason: str = "",
    diagnostic: str = "",
    problem_code: str | None = None,
    locked: bool = False,
    refresh: bool = True,
    unique_checked: bool = False,
) -> DeliveryEvent | None:
    """Record one event; returns None when this exact event was recorded before.

    ``locked=True`` says the caller read ``delivery`` with ``select_for_update`` in the
    current transaction, so its status is current and the row is ours: the lock-and-re-read
    is skipped and ``delivery`` itself is updated (the sender's hot path). ``refresh=False``
    skips re-reading ``delivery`` afterwards, for callers that do not look at it again.
    ``unique_checked=True`` says the caller found ``event_id`` unrecorded while holding the
    delivery's lock, so the insert runs without a savepoint (a clash then aborts the
    caller's transaction, which the webhook batch handles by going one by one).
    """
    with transaction.atomic():
        current = delivery if locked else Delivery.objects.select_for_update().get(pk=delivery.pk)
        fields = {
            "delivery": current,
            "kind": kind,
            "source": source,
            "event_id": event_id[:255],
            "occurred_at": occurred_at or timezone.now(),
            "reply_code": (reply_code or "")[:3],
            "status_code": (status_code or "")[:16],
            "reason": (reason or "")[:40],
            "diagnostic": diagnostic or "",
        }
        if not fields["event_id"] or unique_checked:
            # The unique constraint only covers non-empty ids, so this insert cannot clash
            # (or the caller checked): no savepoint, two statements fewer.
            event = DeliveryEvent.objects.create(**fields)
        else:
            try:
                with transaction.atomic():
                    event = DeliveryEvent.objects.create(**fields)
            except IntegrityError:
                return None  # the same webhook or bounce, delivered to us again
        if RANK.get(kind, -1) > RANK.get(current.status, -1):
            current.status = kind
            if problem_code is None:
                problem_code = PROBLEM_FOR_KIND.get(kind, "")
            if kind in (S.DELIVERED, S.OPENED, S.CLICKED):
                problem_code = ""
            current.problem_code = problem_code
            current.save(update_fields=["status", "problem_code", "updated"])
        suppression_rules_apply(current, event)
    if refresh and not locked:
        delivery.refresh_from_db()
    return event
