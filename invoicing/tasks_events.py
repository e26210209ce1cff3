"""Celery tasks for delivery events from ESP webhooks and the bounce mailbox.

Thin on purpose: each takes primary keys (or nothing), calls a service and owns its retry
policy. Celery autodiscovers only ``tasks.py``; `InvoicingConfig.ready` imports this module
so the worker registers these tasks too.
"""

from __future__ import annotations

import logging

from celery import shared_task

from invoicing.bounce_mailbox import BounceMailboxError, bounce_mailbox_poll, mailbox_from_settings
from invoicing.webhook_processing import webhook_events_pending, webhook_events_process_batch

logger = logging.getLogger(__name__)


@shared_task(name="invoicing.process_webhook_event", ignore_result=True)
def webhook_event_process_task(webhook_event_id: int) -> None:
    """Queued once per stored event; processes a whole batch of pending ones.

    Under load, the first task claims up to WEBHOOK_BATCH pending events (its own among
    them) and the tasks of events it already did find nothing left and end after one
    query. A failure inside is written on the event (`webhook_event_fail`) and the event
    stays pending, so the sweep below retries it, even after a fix is deployed.
    """
    claimed = webhook_events_process_batch()
    if claimed == 0:
        # Nothing pending was free: this event is done, or another worker holds it now.
        logger.debug("webhook event %s: already processed", webhook_event_id)


@shared_task(name="invoicing.sweep_webhook_events", ignore_result=True)
def webhook_events_sweep_task() -> int:
    """Process events whose own task was lost; returns how many were tried."""
    pending = webhook_events_pending()
    if pending:
        webhook_events_process_batch(webhook_event_ids=pending, limit=len(pending))
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
