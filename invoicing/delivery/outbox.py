"""The outbox: one `Delivery` row per recipient, written with the send and queued.

Sending is a transactional outbox: `invoicing.sending` writes the rows here in the member's
transaction, `invoicing.enqueue` queues their ids once it commits, and the group sender
(`invoicing.delivery.sender`) claims, sends and records them. An address that cannot be
sent to (malformed, or blocked by `invoicing.delivery.suppression`) gets its row too, with
the reason: nothing is dropped silently. Queued rows whose task was lost are found again
here (`deliveries_queued_stale`), and rows the server never took are given up on here
(`deliveries_fail`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from email.utils import make_msgid

from django.db import transaction
from django.utils import timezone

from invoicing.delivery.events import delivery_event_record
from invoicing.delivery.models import Delivery, Suppression
from invoicing.delivery.suppression import active_suppression, active_suppressions
from invoicing.delivery.verp import new_verp_token
from invoicing.models import Invoice
from portal.addresses import AddressError, validate_address
from portal.emails import platform_domain
from portal.models import Client

S = Delivery.Status


# AddressError codes that mean "a character no address may hold" (PROBLEMS.md's
# send.invalid_recipient_chars); any other refusal is a document not sent.
CHARACTER_CODES = {"forbidden_character", "space", "invisible_character"}


def _message_id(domain: str | None = None) -> str:
    return make_msgid(domain=domain or platform_domain())


def delivery_prepare(
    *, invoice: Invoice, address: str, normalized: str, is_test: bool = False
) -> Delivery:
    """Write the delivery row; a blocked or malformed address is recorded, never dropped."""
    delivery = Delivery.objects.create(
        firm_id=invoice.firm_id,
        invoice=invoice,
        client_id=invoice.client_id,
        address=address,
        normalized=normalized,
        is_test=is_test,
        verp_token=new_verp_token(),
        message_id=_message_id(),
    )
    try:
        validate_address(address)
    except AddressError as exc:
        _record_invalid(delivery, exc)
        return delivery
    if not is_test:
        suppression = active_suppression(firm_id=invoice.firm_id, normalized=normalized)
        if suppression is not None:
            delivery_record_suppressed(delivery, suppression)
    return delivery


def deliveries_prepare_many(*, targets: Sequence[tuple[Invoice, str, str]]) -> list[Delivery]:
    """`delivery_prepare` for many (invoice, address, normalized address) ``targets``: the
    rows in one INSERT, with the same checks and the suppression list read once."""
    domain = platform_domain()
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                firm_id=invoice.firm_id,
                invoice=invoice,
                client_id=invoice.client_id,
                address=address,
                normalized=normalized,
                verp_token=new_verp_token(),
                message_id=_message_id(domain),
            )
            for invoice, address, normalized in targets
        ],
        batch_size=1000,
    )
    suppressions = active_suppressions(pairs=((d.firm_id, d.normalized) for d in deliveries))
    for delivery in deliveries:
        try:
            validate_address(delivery.address)
        except AddressError as exc:
            _record_invalid(delivery, exc)
            continue
        suppression = suppressions.get((delivery.firm_id, delivery.normalized))
        if suppression is not None:
            delivery_record_suppressed(delivery, suppression)
    return deliveries


def _record_invalid(delivery: Delivery, exc: AddressError) -> None:
    delivery_event_record(
        delivery=delivery,
        kind=S.FAILED,
        source="portal",
        reason=exc.code,
        diagnostic=exc.message,
        problem_code=(
            "send.invalid_recipient_chars"
            if exc.code in CHARACTER_CODES
            else "delivery.not_sent_rejected_document"
        ),
    )


def delivery_record_suppressed(
    delivery: Delivery, suppression: Suppression, *, locked: bool = False
) -> None:
    """Not sent: the address is blocked (see `invoicing.delivery.suppression`)."""
    delivery_event_record(
        delivery=delivery,
        locked=locked,
        kind=S.SUPPRESSED,
        source="portal",
        reason=suppression.reason,
        diagnostic=str(suppression.get_reason_display()),
        # The guide differs: a blocked-after-failures address may work again soon.
        problem_code=(
            "delivery.blocked_repeated_failures"
            if suppression.reason == Suppression.Reason.REPEATED_SOFT
            else "delivery.suppressed"
        ),
    )


# A delivery in these states has no outcome yet: sending the invoice again to its address
# would email the client twice (a double click, a reload, a colleague pressing Send too).
IN_FLIGHT = (S.QUEUED, S.SENDING)


def deliveries_in_flight(invoice_ids: Sequence[int]) -> set[tuple[int, str]]:
    """(invoice id, address) pairs with a send that has no outcome yet. Read under the
    invoices' row locks, so a concurrent send of the same invoice has committed or waits."""
    return set(
        Delivery.objects.filter(
            invoice_id__in=list(invoice_ids), is_test=False, status__in=IN_FLIGHT
        ).values_list("invoice_id", "normalized")
    )


def address_problems_lift(*, client: Client, normalized: str) -> int:
    """The old address was fixed: its deliveries to this client stop showing as problems."""
    return (
        Delivery.objects.filter(client=client, normalized=normalized)
        .exclude(problem_code="")
        .update(problem_code="")
    )


# Longer than a send task's own retries (1 + 2 + 4 + 8 + 16 minutes of backoff).
QUEUED_STALE = timedelta(hours=1)


def deliveries_queued_stale(*, now: datetime | None = None, limit: int = 5000) -> list[int]:
    """Queued deliveries that no send task has touched for an hour: their task was lost (a
    broker that forgot its messages, a worker lost with the task). Returns their ids, marked
    as picked up now so that the next sweep leaves them to the task it is about to queue.
    Sending them twice cannot happen: a task only claims deliveries still queued."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=S.QUEUED, updated__lt=now - QUEUED_STALE)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        Delivery.objects.filter(pk__in=ids).update(updated=now)
    return ids


def deliveries_fail(*, delivery_ids: Sequence[int], diagnostic: str) -> None:
    """Give up on deliveries the server never took, after the task's retries.

    Only those still queued, read under their row locks: one a stale-queue sweep's task
    claimed (and maybe sent) meanwhile is not marked failed over its real outcome.
    """
    with transaction.atomic():
        queued = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(pk__in=list(delivery_ids), status=S.QUEUED)
            .order_by("pk")
        )
        for delivery in queued:
            delivery_record_not_sent(delivery, diagnostic)


def delivery_record_not_sent(
    delivery: Delivery, diagnostic: str, *, reason: str = "", occurred_at: datetime | None = None
) -> None:
    """Not sent, and never will be by this attempt: the server never took it (after the
    task's retries) or its email could not be built. Against the row the caller locked."""
    delivery_event_record(
        delivery=delivery,
        locked=True,
        kind=S.FAILED,
        source="portal",
        occurred_at=occurred_at,
        reason=reason,
        diagnostic=diagnostic,
        problem_code="delivery.not_sent_rejected_document",
    )
