"""Thin tasks: take ids, call a service, own the retry policy.

The tasks of invoices and payments are here; those of delivery (sending, soft retries, the
watchdogs, webhook processing, the bounce mailbox) are in `invoicing.delivery.tasks`, which
`InvoicingConfig.ready` imports so every worker registers them. Every task keeps the
explicit name it was first given: django-celery-beat rows and queued messages refer to it.
Services never import this module: they queue tasks through `invoicing.enqueue`.
"""

from __future__ import annotations

import smtplib

from celery import shared_task

from invoicing.payments.link_requests import pay_link_request_notify
from invoicing.payments.recording import invoice_paid_notify_once


@shared_task(name="invoicing.invoice_paid_notify", ignore_result=True)
def invoice_paid_notify_task(invoice_id: int) -> None:
    invoice_paid_notify_once(invoice_id=invoice_id)


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
