"""Celery tasks for delivery events from ESP webhooks and the bounce mailbox.

Thin on purpose: each takes primary keys (or nothing), calls a service and owns its retry
policy. Celery autodiscovers only ``tasks.py``; `InvoicingConfig.ready` imports this module
so the worker registers these tasks too.
"""

from __future__ import annotations

import logging

from celery import shared_task

from invoicing.bounce_mailbox import BounceMailboxError, bounce_mailbox_poll, mailbox_from_settings
from invoicing.webhook_processing import (
    webhook_event_fail,
    webhook_event_process,
    webhook_events_pending,
)

logger = logging.getLogger(__name__)


@shared_task(
    name="invoicing.process_webhook_event",
    ignore_result=True,
    bind=True,
    max_retries=5,
    default_retry_delay=60,
)
def webhook_event_process_task(self, webhook_event_id: int) -> None:
    try:
        webhook_event_process(webhook_event_id=webhook_event_id)
    except Exception as exc:
        # The event stays stored and pending; the sweep below picks it up again even after
        # the retries here run out, so a bug fixed later still processes it.
        logger.exception("webhook event %s could not be processed", webhook_event_id)
        webhook_event_fail(webhook_event_id=webhook_event_id, error=repr(exc))
        raise self.retry(exc=exc) from exc


@shared_task(name="invoicing.sweep_webhook_events", ignore_result=True)
def webhook_events_sweep_task() -> int:
    """Process events whose own task was lost; returns how many were tried."""
    pending = webhook_events_pending()
    for pk in pending:
        try:
            webhook_event_process(webhook_event_id=pk)
        except Exception as exc:
            logger.exception("webhook event %s could not be processed", pk)
            webhook_event_fail(webhook_event_id=pk, error=repr(exc))
    return len(pending)


@shared_task(
    name="invoicing.poll_bounce_mailbox",
    ignore_result=True,
    bind=True,
    max_retries=3,
    default_retry_delay=120,
)
def bounce_mailbox_poll_task(self) -> int:
    """Read new bounces; does nothing while no bounce mailbox is configured."""
    mailbox = mailbox_from_settings()
    if mailbox is None:
        return 0
    try:
        return bounce_mailbox_poll(mailbox=mailbox).recorded
    except BounceMailboxError as exc:
        if exc.temporary:
            raise self.retry(exc=exc) from exc
        # Wrong password or folder: retrying cannot help until someone fixes the settings.
        logger.error("bounce mailbox: %s", exc)
        return 0
