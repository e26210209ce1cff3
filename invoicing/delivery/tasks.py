"""Celery tasks of delivery: sending, soft retries, the watchdogs, ESP webhook events and
the bounce mailbox.

Thin on purpose: each takes primary keys (or nothing), calls a service and owns its retry
policy. Celery autodiscovers only ``invoicing/tasks.py``; `InvoicingConfig.ready` imports
this module so the worker registers these tasks too. Their names (``invoicing.…``) are
the ones they had before they moved here: beat rows and queued messages refer to them.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.core.cache import cache

from invoicing.delivery.dsn_mailbox import (
    BounceMailboxError,
    bounce_mailbox_poll,
    mailbox_from_settings,
)
from invoicing.delivery.outbox import deliveries_fail, deliveries_queued_stale
from invoicing.delivery.refusals import delivery_soft_retry
from invoicing.delivery.sender import deliveries_send, deliveries_sending_expire
from invoicing.delivery.webhook_events import webhook_events_drain, webhook_events_retry
from invoicing.enqueue import SEND_CHUNK

logger = logging.getLogger(__name__)

# Events stored within this many seconds of a kick share its task instead of queueing their
# own: at 1,000 events/s a publish per event cost as much as storing the event.
KICK_WINDOW_SECONDS = 1
# The kicked task waits this long, longer than the window, so that it runs after the last
# event the window let through even when the web host's clock (which sets the task's ETA) is a
# little behind the worker's.
KICK_DELAY_SECONDS = 2
KICK_CACHE_KEY = "invoicing:webhook-events-kick"
WAITING_KICK_CACHE_KEY = "invoicing:webhook-events-waiting-kick"
# A task drains for at most this long, then hands what is left to a fresh task.
DRAIN_SECONDS = 50.0
SWEEP_SECONDS = 50.0


def webhook_events_kick() -> None:
    """Make sure processing runs after the events just committed, with one task per window.

    The first kick of a window adds a cache key that lives for the window and queues one task
    for after it; later kicks in the window find the key and queue nothing, because that task
    runs after their events and drains everything pending. The default cache is per process,
    so that is one task per window per web worker; a shared cache makes it one in all. If the
    broker is down the events stay stored and the sweep processes them.
    """
    _kick(webhook_event_process_task, KICK_CACHE_KEY)


def webhook_events_waiting_kick() -> None:
    """Match the events that wait for their delivery, now that a sender recorded some.

    Called by the sender after a record step that stored ESP message ids while events were
    waiting; one task per window as for `webhook_events_kick`. Should this kick be lost, the
    sweep matches them within a minute or so.
    """
    _kick(webhook_events_match_waiting_task, WAITING_KICK_CACHE_KEY)


def _kick(task: Task, cache_key: str) -> None:
    if task.app.conf.task_always_eager:
        # The task runs right here, so no kick is ever pending to share.
        task.delay()
        return
    if not cache.add(cache_key, 1, timeout=KICK_WINDOW_SECONDS):
        return
    try:
        task.apply_async(countdown=KICK_DELAY_SECONDS)
    except Exception:
        cache.delete(cache_key)  # the next kick tries again
        logger.exception("could not queue webhook processing; the sweep will process the events")


@shared_task(name="invoicing.process_webhook_event", ignore_result=True)
def webhook_event_process_task(webhook_event_id: int | None = None) -> int:
    """Process every pending webhook event; queued by `webhook_events_kick`.

    ``webhook_event_id`` is what tasks queued before kicks existed carry; it is not needed.
    A failure inside is written on the event (`webhook_event_fail`) and the event stays
    pending for the sweep, which retries it even after a fix is deployed. Returns how many
    events were claimed.
    """
    claimed, time_ran_out = webhook_events_drain(max_seconds=DRAIN_SECONDS)
    if time_ran_out:
        webhook_event_process_task.delay()  # a fresh task for the rest, not one endless task
    return claimed


@shared_task(name="invoicing.sweep_webhook_events", ignore_result=True)
def webhook_events_sweep_task() -> int:
    """Process events whose kick was lost, retry failed ones and try again those waiting for
    their delivery; returns how many were tried.

    Each pending event is tried once per sweep (ids only go up), so a bad one cannot keep the
    sweep busy; what is left when time runs out waits for the next sweep.
    """
    return webhook_events_retry(max_seconds=SWEEP_SECONDS)


@shared_task(name="invoicing.match_waiting_webhook_events", ignore_result=True)
def webhook_events_match_waiting_task() -> int:
    """Try again, once each, the events waiting for their delivery, whatever their age;
    queued by `webhook_events_waiting_kick`. Returns how many were tried."""
    return webhook_events_retry(max_seconds=SWEEP_SECONDS, older_than_seconds=0, waiting_only=True)


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
