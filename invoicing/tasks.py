"""Thin tasks: take ids, call a service, own the retry policy."""

from __future__ import annotations

import smtplib

from celery import shared_task

from invoicing.payments.link_requests import pay_link_request_notify
from invoicing.services import (
    SEND_CHUNK,
    deliveries_fail,
    deliveries_queued_stale,
    deliveries_send,
    deliveries_sending_expire,
    delivery_soft_retry,
    invoice_paid_notify_once,
)

SEND_RETRIES = 5


@shared_task(name="invoicing.deliveries_send", bind=True, ignore_result=True)
def deliveries_send_task(self, delivery_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    retry = deliveries_send(delivery_ids=delivery_ids)
    if not retry:
        return
    if self.request.retries >= SEND_RETRIES:
        deliveries_fail(
            delivery_ids=retry,
            diagnostic="The sending server could not be reached after several attempts.",
        )
        return
    # Back off 1, 2, 4, 8, 16 minutes: the mail server is down or refusing connections.
    raise self.retry(args=[retry], countdown=60 * 2**self.request.retries)


@shared_task(name="invoicing.invoice_paid_notify", ignore_result=True)
def invoice_paid_notify_task(invoice_id: int) -> None:
    invoice_paid_notify_once(invoice_id=invoice_id)


@shared_task(name="invoicing.delivery_soft_retry", ignore_result=True)
def delivery_soft_retry_task(delivery_id: int) -> None:
    delivery_soft_retry(delivery_id=delivery_id)


@shared_task(name="invoicing.requeue_stale_deliveries", ignore_result=True)
def deliveries_requeue_stale_task() -> None:
    """Queued deliveries whose send task was lost get a new one (see the service)."""
    ids = deliveries_queued_stale()
    for first in range(0, len(ids), SEND_CHUNK):
        deliveries_send_task.delay(ids[first : first + SEND_CHUNK])


@shared_task(name="invoicing.expire_stuck_sending", ignore_result=True)
def deliveries_sending_expire_task() -> None:
    """Deliveries a dead sender left "sending" become "outcome unknown" (see the service)."""
    deliveries_sending_expire()


@shared_task(
    name="invoicing.pay_link_request_notify",
    ignore_result=True,
    autoretry_for=(smtplib.SMTPException, OSError),
    retry_backoff=60,
    max_retries=5,
)
def pay_link_request_notify_task(delivery_id: int) -> None:
    """Tell the firm a client asked for a new Pay Now link; retried while the mail server is
    unreachable (the request itself is on the invoice's timeline already)."""
    pay_link_request_notify(delivery_id=delivery_id)
