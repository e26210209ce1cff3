"""ESP tracking webhooks: anymail verifies and normalises them, we store them and move on.

anymail's views (``/webhooks/anymail/<esp>/tracking/``) check the basic-auth secret and, where
the ESP signs its posts, the signature, then send the ``tracking`` signal once per event. The
receiver here only writes the event down as a `WebhookEvent`; processing happens later in a
task (`invoicing.delivery.webhook_events` turns it into a delivery event, idempotently), so the ESP
gets its 200 quickly and an event is never lost to a failure further on.

A post's events are stored with one INSERT: `portal.middleware_webhooks` runs anymail's view
inside `tracking_events_collected`, the receiver only collects, and the rows are written when
the view has returned, before the response leaves. If that INSERT fails the ESP gets a 500 and
retries: a post answered 200 is in the database. Processing is not queued per event but
"kicked" (`webhook_events_kick`): at most one task per short window, which drains everything
pending; the periodic sweep catches any event whose kick was lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent
from anymail.utils import get_anymail_setting
from django.db import transaction

from invoicing.delivery.models import WebhookEvent
from invoicing.enqueue import webhook_events_kick

logger = logging.getLogger(__name__)

# The normalised fields we keep; everything else of anymail's event is derivable from these.
FIELDS = (
    "event_type",
    "message_id",
    "recipient",
    "reject_reason",
    "mta_response",
    "description",
    "event_id",
)


def tracking_event_payload(event: AnymailTrackingEvent) -> dict[str, Any]:
    """The JSON we store for one anymail tracking event."""
    payload: dict[str, Any] = {name: _text(getattr(event, name, None)) for name in FIELDS}
    payload["timestamp"] = event.timestamp.isoformat() if event.timestamp else None
    payload["esp_event"] = _jsonable(event.esp_event)
    # Our delivery's token comes back here (`emails.DELIVERY_METADATA_KEY`).
    payload["metadata"] = _jsonable(getattr(event, "metadata", None) or {})
    return payload


def stable_event_id(esp_name: str, payload: Mapping[str, Any]) -> str:
    """The ESP's event id, or a digest of the event when the ESP gives none (Brevo, Mailjet).

    An ESP that retries a post sends the same body, so the digest is stable across retries.
    """
    if payload.get("event_id"):
        return str(payload["event_id"])[:200]
    canonical = json.dumps({"esp": esp_name, **payload}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def tracking_received(
    sender: object, event: AnymailTrackingEvent, esp_name: str, **kwargs: object
) -> None:
    """anymail's ``tracking`` signal receiver (connected in `InvoicingConfig.ready`)."""
    # anymail only warns when no WEBHOOK_SECRET is set and then accepts anyone's posts. An
    # unauthenticated event could mark a client's address dead, so refuse it (answered 400).
    if not get_anymail_setting("webhook_secret", default=None):
        logger.error(
            "ESP webhook refused: set ANYMAIL_WEBHOOK_SECRET to accept %s events", esp_name
        )
        raise AnymailWebhookValidationFailure("WEBHOOK_SECRET is not configured")
    payload = tracking_event_payload(event)
    stored = WebhookEvent(
        esp=esp_name[:30], event_id=stable_event_id(esp_name, payload), payload=payload
    )
    collected = _collected.get()
    if collected is not None:
        collected.append(stored)  # written by `tracking_events_collected` as the view returns
        return
    webhook_events_store([stored])


# The events of the post being handled, while `tracking_events_collected` is open.
_collected: ContextVar[list[WebhookEvent] | None] = ContextVar("webhook_events", default=None)


@contextlib.contextmanager
def tracking_events_collected() -> Iterator[None]:
    """Collect the events anymail's view sends, and store them together once it returned.

    Named in ``settings.WEBHOOK_PATHS``: the webhook middleware runs the view inside it. When
    the view raises (a bad signature, say), nothing is stored and the ESP's retry brings the
    events again.
    """
    collected: list[WebhookEvent] = []
    token = _collected.set(collected)
    try:
        yield
    finally:
        _collected.reset(token)
    webhook_events_store(collected)


def webhook_events_store(events: list[WebhookEvent]) -> None:
    """Write the events (one INSERT), then kick their processing once committed."""
    if not events:
        return
    if len(events) == 1:
        # One row needs no transaction around it (bulk_create opens one: two round trips).
        events[0].save(force_insert=True)
    else:
        WebhookEvent.objects.bulk_create(events)
    transaction.on_commit(webhook_events_kick)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _jsonable(value: object) -> Any:
    """An ESP's raw event as JSON: dicts and lists as they are, anything else as text."""
    if value is None:
        return None
    if hasattr(value, "lists"):  # Django QueryDict (Mailgun's legacy form posts)
        return {key: values[0] if len(values) == 1 else values for key, values in value.lists()}
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
