"""Refusals at send time: what a server (or an ESP's API) said "no" to while we sent.

A refusal during the SMTP session is recorded as an event classified like a bounce
(`classify_reply`), so the suppression rules see it as they see a DSN. A temporary one
(4.x.x) is sent again later, as an MTA would retry its queue: each attempt a new delivery on
the timeline (`delivery_soft_retry`, through `invoicing.sending.delivery_resend`).
"""

from __future__ import annotations

import re
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from invoicing.delivery.events import classify_reply, delivery_event_record
from invoicing.delivery.models import Delivery
from invoicing.enqueue import delivery_soft_retry_later
from invoicing.invoices import InvoiceError
from invoicing.models import Invoice
from invoicing.sending import delivery_resend

S = Delivery.Status


_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def smtp_refusal_record(
    delivery: Delivery, code: int, text: bytes | str, command: str, *, locked: bool = False
) -> None:
    """What the server said when it refused this email during the SMTP session (RCPT,
    MAIL or DATA), classified like a bounce; a temporary refusal schedules a retry."""
    diagnostic = as_text(text)
    found = _ENHANCED_STATUS.match(diagnostic)
    status = found.group(1) if found else ""
    outcome = classify_reply(
        str(code), status, diagnostic, command=command, recipient=delivery.address
    )
    delivery_event_record(
        delivery=delivery,
        locked=locked,
        kind=outcome.kind,
        source="smtp",
        reply_code=str(code),
        status_code=status,
        reason=outcome.reason,
        diagnostic=f"{code} {diagnostic}".strip(),
        problem_code=outcome.problem_code,
    )
    if outcome.kind == S.SOFT_BOUNCED and not delivery.is_test:
        _soft_retry_schedule(delivery)


def esp_refusal_record(
    delivery: Delivery, *, status: str, esp_message_id: str, at: datetime
) -> None:
    """The ESP's API refused this recipient at send time (anymail's "rejected" or
    "invalid"): recorded as the ESP's own event, against the row the caller locked."""
    if esp_message_id:
        Delivery.objects.filter(pk=delivery.pk).update(esp_message_id=esp_message_id)
    invalid = status == "invalid"
    delivery_event_record(
        delivery=delivery,
        locked=True,
        kind=S.BOUNCED if invalid else S.REJECTED,
        source="webhook",
        occurred_at=at,
        reason=status,
        diagnostic=_("The email service refused this recipient (%(status)s).") % {"status": status},
        problem_code="delivery.invalid_address" if invalid else "delivery.rejected_policy",
    )


# A server that refuses for now (4.x.x) at send time gets the email again later, as an MTA
# would retry its queue (settings.DELIVERY_SOFT_RETRY_MINUTES, by default after 15 minutes,
# 1 hour and 4 hours), each attempt a new delivery on the timeline.
def _soft_retry_schedule(delivery: Delivery) -> None:
    attempts = Delivery.objects.filter(
        invoice_id=delivery.invoice_id,
        normalized=delivery.normalized,
        is_test=False,
        status=S.SOFT_BOUNCED,
    ).count()
    delays = settings.DELIVERY_SOFT_RETRY_MINUTES
    if attempts > len(delays):
        return  # given up: the problem stays shown, and repeated failures block the address
    countdown = delays[attempts - 1] * 60
    delivery_soft_retry_later(delivery_id=delivery.pk, countdown=countdown)


@transaction.atomic
def delivery_soft_retry(*, delivery_id: int) -> list[Delivery]:
    """Send again after a temporary refusal, unless something newer already happened.

    The broker may hand the same retry to two workers (a countdown longer than its
    visibility timeout, a redelivery): the delivery's row lock orders them, and the second
    finds the delivery the first queued and does nothing.
    """
    delivery = (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("invoice")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None or delivery.status != S.SOFT_BOUNCED:
        return []
    newer = Delivery.objects.filter(
        invoice_id=delivery.invoice_id, normalized=delivery.normalized, pk__gt=delivery.pk
    )
    if newer.exists() or delivery.invoice.status in (Invoice.Status.VOID, Invoice.Status.PAID):
        return []
    try:
        with transaction.atomic():
            return delivery_resend(delivery=delivery)
    except InvoiceError:
        return []  # the address left the client meanwhile, or a send is in flight
