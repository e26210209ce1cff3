"""Queueing invoicing's tasks once the caller's transaction commits: the one place services
reach tasks.

Services decide what must happen later; tasks run it. Services call these functions, never
the tasks module (tasks call services, so importing each other would tie them in a knot):
each imports its task when called and queues it with `transaction.on_commit`, so a task
never runs before the rows it reads are visible, and a rolled-back change queues nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from invoicing.delivery.models import Delivery

# Deliveries per send task in a bulk send: each task sends its share over one SMTP
# connection, and a chunk this size keeps a task to well under a minute.
SEND_CHUNK = 500


def deliveries_send_soon(deliveries: Sequence[Delivery]) -> None:
    """Queue one send task for the deliveries still queued, after commit."""
    from invoicing.delivery.tasks import deliveries_send_task

    ids = [d.pk for d in deliveries if d.status == Delivery.Status.QUEUED]
    if ids:
        transaction.on_commit(lambda: deliveries_send_task.delay(ids))


def deliveries_send_soon_chunked(deliveries: Sequence[Delivery]) -> int:
    """Queue the queued deliveries in tasks of SEND_CHUNK ids after commit; how many tasks."""
    from invoicing.delivery.tasks import deliveries_send_task

    ids = [d.pk for d in deliveries if d.status == Delivery.Status.QUEUED]
    chunks = [ids[i : i + SEND_CHUNK] for i in range(0, len(ids), SEND_CHUNK)]
    for chunk in chunks:
        # Default-argument binding: each callback must keep its own chunk.
        transaction.on_commit(lambda chunk=chunk: deliveries_send_task.delay(chunk))
    return len(chunks)


def delivery_soft_retry_later(*, delivery_id: int, countdown: int) -> None:
    """Send again ``countdown`` seconds after commit (a temporary refusal's retry)."""
    from invoicing.delivery.tasks import delivery_soft_retry_task

    transaction.on_commit(
        lambda: delivery_soft_retry_task.apply_async(args=[delivery_id], countdown=countdown)
    )


def webhook_events_kick() -> None:
    """Process the webhook events just stored: one task per short window (the window and its
    cache key are in `invoicing.delivery.tasks.webhook_events_kick`). Call after commit."""
    from invoicing.delivery.tasks import webhook_events_kick as kick

    kick()


def webhook_events_match_soon() -> None:
    """Match the webhook events waiting for deliveries a sender just recorded, after commit."""
    from invoicing.delivery.tasks import webhook_events_waiting_kick

    transaction.on_commit(webhook_events_waiting_kick)


def invoice_paid_notify_soon(*, invoice_id: int) -> None:
    """Tell the owners the invoice was paid, after commit (the task sends it once)."""
    from invoicing.tasks import invoice_paid_notify_task

    transaction.on_commit(lambda: invoice_paid_notify_task.delay(invoice_id))


def pay_link_request_notify_soon(*, delivery_id: int) -> None:
    """Tell the firm a client asked for a new Pay Now link, after commit."""
    from invoicing.tasks import pay_link_request_notify_task

    # robust: the client has done their part; a broker outage must not show them an
    # error (the request is on the timeline whatever happens to the email).
    transaction.on_commit(lambda: pay_link_request_notify_task.delay(delivery_id), robust=True)
