"""ESP tracking webhooks: anymail verifies and normalises them, we store them and move on.

anymail's views (``/webhooks/anymail/<esp>/tracking/``) check the basic-auth secret and, where
the ESP signs its posts, the signature, then send the ``tracking`` signal once per event. The
receiver here only writes the event down as a `WebhookEvent` and queues its processing after
commit: the ESP gets its 200 quickly, and an event is never lost to a failure further on
(`invoicing.webhook_processing` turns it into a delivery event, idempotently).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent
from anymail.utils import get_anymail_setting
from django.db import transaction

from invoicing.models import WebhookEvent
from invoicing.tasks_events import webhook_event_process_task

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
    stored = WebhookEvent.objects.create(
        esp=esp_name[:30], event_id=stable_event_id(esp_name, payload), payload=payload
    )
    transaction.on_commit(lambda: webhook_event_process_task.delay(stored.pk))


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
