"""Turn a stored ESP webhook event into a delivery event.

Webhooks are untrusted hints: the event only ever becomes a `DeliveryEvent` through
`delivery_event_record`, which is idempotent by (source, event id) and never moves a delivery
backwards. Hard versus soft is decided here from the server's reply, not from the ESP's label:
ESPs disagree (Postmark calls a full mailbox a "SoftBounce", Brevo a "hard_bounce").

An event can arrive before its delivery knows the ESP's message id: the sender stores that id
when it records its group, after the email left (see `invoicing.delivery.sender`).
Such an event is not dropped: it stays pending, marked as waiting (`WAITING_FOR_DELIVERY`),
for settings.WEBHOOK_UNMATCHED_GRACE_MINUTES after it arrived. The sender starts a pass over
waiting events after each record step and the sweep tries them every minute; each pass goes
by increasing id and tries each event once, and the drain behind a kick skips them, so no
task spins on an event that cannot be matched yet. Past the grace, an event that still
matches nothing is closed as unmatched: not ours (another system sharing the ESP account) or
long gone.

One piece (over 500 lines) on purpose: matching an event to its delivery, the waiting
for deliveries not recorded yet, and the batched drain share one claim of the pending rows
and one rule (an event becomes a delivery event only through `delivery_event_record`);
split, each part would restate when a row may be claimed, retried or dropped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from invoicing.delivery.bounces.dsn import find_last_status, find_reply_code
from invoicing.delivery.bounces.rules import is_hard, smtp_command
from invoicing.delivery.events import (
    POLICY_REASONS,
    SPAM_REASONS,
    Outcome,
    classify_reply,
    delivery_event_record,
)
from invoicing.delivery.models import Delivery, DeliveryEvent, WebhookEvent
from invoicing.emails import DELIVERY_METADATA_KEY
from portal.addresses import normalize_address

logger = logging.getLogger(__name__)

S = Delivery.Status

# anymail's normalised event types that say something about delivery, and what they become
# when no server reply has to be read. Failures are decided by `failure_outcome`.
SIMPLE_KINDS = {
    "queued": S.QUEUED,
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "opened": S.OPENED,  # approximate: image proxies open mail nobody read
    "clicked": S.CLICKED,
    "complained": S.COMPLAINED,
    "unsubscribed": "unsubscribed",  # kept on the timeline; not a delivery status
}
FAILURE_TYPES = {"bounced", "deferred", "rejected", "failed"}
# "autoresponded", "subscribed", "unknown", "inbound*": nothing to record on a delivery.

# Blocks by the recipient's filters; with a permanent code they are "rejected by policy".
POLICY_DETAILS = POLICY_REASONS | SPAM_REASONS | {"badreputation", "requireptr", "authfailure"}


# The start of `WebhookEvent.error` of an event kept pending because no delivery has its
# message id yet. Not a failure: the drain leaves such events to the passes that go by id.
WAITING_FOR_DELIVERY = "waiting for its delivery"


@dataclass(frozen=True)
class WebhookResult:
    delivery_id: int | None
    event: DeliveryEvent | None
    waiting: bool = False  # no delivery matched yet: the event stays pending


def failure_outcome(
    reply_code: str | None,
    status_code: str | None,
    diagnostic: str | None,
    *,
    hard: bool | None = None,
    recipient: str | None = None,
) -> Outcome:
    """Our verdict on one failed delivery attempt.

    `classify_reply` calls every permanent 5.1.x failure hard, but real servers put 5.1.x on
    sender rejections and rate limits too. An address is only declared dead when the bounce
    rules (checked on a real corpus) agree that the reply says so; ``hard`` lets a caller
    that already ran them (the DSN reader) pass their verdict.
    """
    command = smtp_command(diagnostic) if diagnostic else None
    outcome = classify_reply(
        reply_code, status_code, diagnostic, command=command, recipient=recipient
    )
    if hard is None:
        # classify_reply's reason is the bounce rules' detail for this reply.
        hard = bool(status_code or reply_code) and is_hard(outcome.reason, status_code, reply_code)
    if outcome.kind == S.BOUNCED and not hard:
        if outcome.reason in POLICY_DETAILS:
            return Outcome(S.REJECTED, outcome.reason, "delivery.rejected_policy")
        return Outcome(S.SOFT_BOUNCED, outcome.reason, "delivery.soft_bounce")
    if hard and outcome.kind != S.BOUNCED:
        problem = (
            "delivery.invalid_address"
            if outcome.reason in ("hostunknown", "notaccept")
            else "delivery.hard_bounce"
        )
        return Outcome(S.BOUNCED, outcome.reason, problem)
    return outcome


def webhook_event_process(*, webhook_event_id: int) -> WebhookResult | None:
    """Process one stored webhook event; None when it was done already or is being done.

    Safe to run twice and concurrently: the row is claimed under a lock that other workers
    skip, and `processed_at` marks it done in the same transaction.
    """
    with transaction.atomic():
        stored = (
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(pk=webhook_event_id, processed_at__isnull=True)
            .first()
        )
        if stored is None:
            return None
        result = _apply(stored)
        if result.waiting:
            stored.error = _waiting_error()
            stored.save(update_fields=["error"])
        else:
            stored.processed_at = timezone.now()
            stored.error = ""
            stored.save(update_fields=["processed_at", "error"])
    return result


def webhook_events_pending(
    *,
    older_than_seconds: int = 30,
    limit: int = 500,
    after_id: int = 0,
    waiting_only: bool = False,
) -> list[int]:
    """Events not processed after ``older_than_seconds``, oldest first, ids above ``after_id``:
    their kick was lost (a broker outage, a crashed worker), their processing failed, or they
    wait for their delivery (only those with ``waiting_only``)."""
    pending = WebhookEvent.objects.filter(processed_at__isnull=True, pk__gt=after_id)
    if older_than_seconds:
        cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
        pending = pending.filter(received__lt=cutoff)
    if waiting_only:
        pending = pending.filter(error__startswith=WAITING_FOR_DELIVERY)
    return list(pending.order_by("pk").values_list("pk", flat=True)[:limit])


def webhook_events_waiting_exist() -> bool:
    """Whether any event waits for its delivery to be recorded."""
    return WebhookEvent.objects.filter(
        processed_at__isnull=True, error__startswith=WAITING_FOR_DELIVERY
    ).exists()


def webhook_events_retry(
    *, max_seconds: float, older_than_seconds: int = 30, waiting_only: bool = False
) -> int:
    """Try pending events again by increasing id, each once, until none is left or
    ``max_seconds`` passed; returns how many were tried.

    Ids only go up, so an event that still fails or still waits cannot keep the pass busy;
    what is left when time runs out waits for the next pass.
    """
    deadline = time.monotonic() + max_seconds
    tried = last_id = 0
    while time.monotonic() < deadline:
        pending = webhook_events_pending(
            older_than_seconds=older_than_seconds,
            limit=WEBHOOK_BATCH,
            after_id=last_id,
            waiting_only=waiting_only,
        )
        if not pending:
            break
        webhook_events_process_batch(webhook_event_ids=pending, limit=len(pending))
        tried += len(pending)
        last_id = pending[-1]
    return tried


def webhook_event_fail(*, webhook_event_id: int, error: str) -> None:
    """Note why an event could not be processed; it stays pending for the next sweep."""
    WebhookEvent.objects.filter(pk=webhook_event_id, processed_at__isnull=True).update(
        error=error[:2000]
    )


def _apply(stored: WebhookEvent) -> WebhookResult:
    payload: Mapping[str, Any] = stored.payload or {}
    event_type = payload.get("event_type") or "unknown"
    if event_type not in SIMPLE_KINDS and event_type not in FAILURE_TYPES:
        return WebhookResult(None, None)
    if not payload.get("message_id"):
        _log_unmatched(stored, payload)  # nothing to match it by, now or later
        return WebhookResult(None, None)
    candidates = list(
        Delivery.objects.filter(
            esp_message_id__in=_message_id_forms(payload["message_id"])
        ).order_by("pk")
    )
    if not candidates:
        token = _delivery_token(payload)
        candidates = _by_metadata({token: payload["message_id"]}).get(token, [])
    if not candidates:
        return WebhookResult(None, None, waiting=_waits_for_delivery(stored, payload))
    delivery = _pick(candidates, payload.get("recipient"))
    if delivery is None:
        _log_unmatched(stored, payload)  # the message is ours, this recipient is not
        return WebhookResult(None, None)
    event = delivery_event_record(delivery=delivery, **_event_fields(stored, payload))
    return WebhookResult(delivery.pk, event)


def _waits_for_delivery(
    stored: WebhookEvent, payload: Mapping[str, Any], *, now: datetime | None = None
) -> bool:
    """No delivery has this event's message id. True: young enough that the sender may still
    record it, so keep the event pending. False: closed as unmatched."""
    grace = timedelta(minutes=settings.WEBHOOK_UNMATCHED_GRACE_MINUTES)
    if stored.received is not None and stored.received > (now or timezone.now()) - grace:
        return True
    # A sender still working (its lease renewed) on a claim made before the event arrived:
    # the event may be about its group, however long the group takes.
    if stored.received is not None and (
        Delivery.objects.filter(status=S.SENDING, claimed_at__lte=stored.received).exists()
    ):
        return True
    _log_unmatched(stored, payload)
    return False


def _waiting_error() -> str:
    return (
        f"{WAITING_FOR_DELIVERY}: no delivery has this message id yet; closed as unmatched "
        f"{settings.WEBHOOK_UNMATCHED_GRACE_MINUTES} minutes after it arrived"
    )


def _log_unmatched(stored: WebhookEvent, payload: Mapping[str, Any]) -> None:
    # Not ours (another system sharing the ESP account) or long gone: nothing to do, and
    # the ESP got its 200 already, so it stops retrying.
    logger.info("webhook %s: no delivery for message %r", stored.pk, payload.get("message_id"))


def _event_fields(stored: WebhookEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The `delivery_event_record` arguments (bar the delivery) for one stored event."""
    event_type = payload.get("event_type") or "unknown"
    reply_code, status_code, diagnostic = _reply_facts(payload)
    problem_code: str | None = None
    reason = ""
    if event_type in SIMPLE_KINDS:
        kind = SIMPLE_KINDS[event_type]
    elif event_type in ("rejected", "failed") and not (reply_code or status_code or diagnostic):
        # The ESP refused to send (its own suppression list, a template error): no server
        # ever saw the message, so this says nothing about the address itself.
        kind = S.FAILED
        reason = (payload.get("reject_reason") or "")[:40]
        diagnostic = payload.get("description") or ""
    else:
        outcome = failure_outcome(
            reply_code, status_code, diagnostic, recipient=payload.get("recipient") or None
        )
        kind, reason, problem_code = outcome.kind, outcome.reason, outcome.problem_code
        if event_type == "deferred" and kind == S.SOFT_BOUNCED:
            # Still being retried by the ESP: a delay, not a bounce (yet).
            kind = S.DEFERRED
    return {
        "kind": kind,
        "source": DeliveryEvent.Source.WEBHOOK,
        "event_id": _delivery_event_id(stored, payload),
        "occurred_at": _timestamp(payload.get("timestamp")),
        "reply_code": reply_code or "",
        "status_code": status_code or "",
        "reason": reason,
        "diagnostic": diagnostic or "",
        "problem_code": problem_code,
    }


def _delivery_token(payload: Mapping[str, Any]) -> str:
    metadata = payload.get("metadata")
    if not isinstance(metadata, Mapping):
        return ""
    return str(metadata.get(DELIVERY_METADATA_KEY) or "")[:40]


def _by_metadata(message_ids: Mapping[str, str]) -> dict[str, list[Delivery]]:
    """Deliveries by the token the ESP echoed in the event's metadata (token -> the event's
    message id), for events whose message id no delivery stored. A delivery that never
    learnt its ESP id (an ESP call that timed out: "outcome unknown") learns it here, so
    later events match it directly."""
    tokens = {token for token in message_ids if token}
    if not tokens:
        return {}
    found = {d.verp_token: [d] for d in Delivery.objects.filter(verp_token__in=tokens)}
    for token, (delivery,) in found.items():
        message_id = str(message_ids[token] or "").strip()[:255]
        if message_id and not delivery.esp_message_id:
            delivery.esp_message_id = message_id
            Delivery.objects.filter(pk=delivery.pk, esp_message_id="").update(
                esp_message_id=message_id
            )
    return found


def _message_id_forms(message_id: str) -> set[str]:
    # ESPs write the same id with and without angle brackets (Mailgun, Brevo).
    bare = message_id.strip().strip("<>")
    return {message_id, bare, f"<{bare}>"}


def _pick(candidates: list[Delivery], recipient: str | None) -> Delivery | None:
    if not candidates:
        return None
    if recipient:
        normalized = normalize_address(recipient)
        for delivery in candidates:
            if delivery.normalized == normalized:
                return delivery
    # One message to one recipient: the ESP may name the address differently (aliases).
    return candidates[0] if len(candidates) == 1 else None


# --- batches --------------------------------------------------------------------------

# Events claimed and recorded per transaction by the batch processor.
WEBHOOK_BATCH = 200


def webhook_events_drain(*, max_seconds: float) -> tuple[int, bool]:
    """Process pending events batch after batch until none is left or ``max_seconds`` passed.

    Returns how many events were claimed and whether time ran out first (events may be left).
    Events whose processing failed before, or that wait for their delivery, are left to the
    passes by id (`webhook_events_retry`): retrying them here would spin on them for the
    whole time.
    """
    deadline = time.monotonic() + max_seconds
    total = 0
    while True:
        claimed = webhook_events_process_batch(include_failed=False)
        total += claimed
        if claimed == 0:
            return total, False
        if time.monotonic() >= deadline:
            return total, True


def webhook_events_process_batch(
    *,
    webhook_event_ids: Sequence[int] | None = None,
    limit: int = WEBHOOK_BATCH,
    include_failed: bool = True,
) -> int:
    """Process up to ``limit`` pending events (these ids, or the oldest) in one transaction.

    The same outcome as `webhook_event_process` for each, with a fixed number of queries
    for the batch's look-ups: the events are claimed in one statement (rows other workers
    hold are skipped), their deliveries found in one, locked in one (in id order, so two
    batches cannot deadlock) and their already-recorded events read in one; each event is
    then one insert and, when it moves the delivery on, one update. Returns how many events
    were claimed. Should anything fail, the batch is rolled back and its events go through
    `webhook_event_process` one by one, so one bad event cannot hold up the others; the bad
    one keeps its error, and ``include_failed=False`` leaves such events out. An event no
    delivery matches yet stays pending, marked as waiting; without ids, waiting events are
    not claimed (only the passes by id try them again), so calling this in a loop ends.
    """
    pending = WebhookEvent.objects.filter(processed_at__isnull=True)
    if not include_failed:
        pending = pending.filter(error="")
    if webhook_event_ids is not None:
        pending = pending.filter(pk__in=list(webhook_event_ids))
    else:
        pending = pending.exclude(error__startswith=WAITING_FOR_DELIVERY)
    try:
        with transaction.atomic():
            stored = list(pending.select_for_update(skip_locked=True).order_by("pk")[:limit])
            if stored:
                waiting = _batch_apply(stored)
                done = [e.pk for e in stored if e.pk not in waiting]
                if done:
                    WebhookEvent.objects.filter(pk__in=done).update(
                        processed_at=timezone.now(), error=""
                    )
                if waiting:
                    WebhookEvent.objects.filter(pk__in=waiting).update(error=_waiting_error())
            return len(stored)
    except Exception:
        logger.exception("webhook batch failed; processing its events one by one")
        ids = list(webhook_event_ids or [])
        if not ids:
            ids = list(pending.order_by("pk").values_list("pk", flat=True)[:limit])
        for pk in ids:
            try:
                webhook_event_process(webhook_event_id=pk)
            except Exception as exc:
                logger.exception("webhook event %s could not be processed", pk)
                webhook_event_fail(webhook_event_id=pk, error=repr(exc))
        return len(ids)


def _batch_apply(stored: list[WebhookEvent]) -> set[int]:
    """Record the batch's events; returns the ids of those that wait for their delivery."""
    relevant = []
    forms: set[str] = set()
    for event in stored:
        payload: Mapping[str, Any] = event.payload or {}
        event_type = payload.get("event_type") or "unknown"
        message_id = payload.get("message_id")
        if event_type not in SIMPLE_KINDS and event_type not in FAILURE_TYPES:
            continue
        if not message_id:
            _log_unmatched(event, payload)
            continue
        relevant.append((event, payload, _message_id_forms(message_id)))
        forms |= relevant[-1][2]
    if not relevant:
        return set()
    by_message_id: dict[str, list[Delivery]] = {}
    for delivery in Delivery.objects.filter(esp_message_id__in=forms).order_by("pk"):
        by_message_id.setdefault(delivery.esp_message_id, []).append(delivery)
    plan: list[tuple[int, dict[str, Any]]] = []
    waiting: set[int] = set()
    now = timezone.now()
    by_token = _by_metadata(
        {
            _delivery_token(payload): payload["message_id"]
            for _event, payload, ids in relevant
            if not any(form in by_message_id for form in ids)
        }
    )
    for event, payload, ids in relevant:
        found = {d.pk: d for form in ids for d in by_message_id.get(form, [])}
        if not found:
            found = {d.pk: d for d in by_token.get(_delivery_token(payload), [])}
        if not found:
            if _waits_for_delivery(event, payload, now=now):
                waiting.add(event.pk)
            continue
        delivery = _pick([found[pk] for pk in sorted(found)], payload.get("recipient"))
        if delivery is None:
            _log_unmatched(event, payload)  # the message is ours, this recipient is not
            continue
        plan.append((delivery.pk, _event_fields(event, payload)))
    if not plan:
        return waiting
    # One lock statement for every delivery the batch touches, then the events recorded
    # against the locked rows: `delivery_event_record` skips its own lock and re-read.
    locked = {
        d.pk: d
        for d in Delivery.objects.select_for_update()
        .filter(pk__in={pk for pk, _ in plan})
        .order_by("pk")
    }
    # Idempotency by (source, event id), read once under those locks: anyone recording the
    # same event locks the same delivery first, so nothing can slip in between.
    keys = {fields["event_id"] for _, fields in plan}
    seen = set(
        DeliveryEvent.objects.filter(
            source=DeliveryEvent.Source.WEBHOOK, event_id__in=keys
        ).values_list("event_id", flat=True)
    )
    for delivery_pk, fields in plan:
        if fields["event_id"] in seen:
            continue  # the same webhook, delivered to us again
        seen.add(fields["event_id"])
        delivery_event_record(
            delivery=locked[delivery_pk], locked=True, unique_checked=True, **fields
        )
    return waiting


def _reply_facts(payload: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Reply code, enhanced status and the server's words, from anymail's fields first and
    from the ESP's structured fields where anymail leaves them out."""
    esp_event = payload.get("esp_event")
    esp = esp_event if isinstance(esp_event, dict) else {}
    texts = [payload.get("mta_response"), payload.get("description")]
    code: str | None = None
    status: str | None = None
    delivery_status = (esp.get("event-data") or {}).get("delivery-status") or {}  # Mailgun
    if isinstance(delivery_status, dict):
        code = _str(delivery_status.get("code"))
        status = _str(delivery_status.get("enhanced-code"))
    status = status or _str(esp.get("status"))  # SendGrid
    for recipient in (esp.get("bounce") or {}).get("bouncedRecipients") or []:  # Amazon SES
        if recipient.get("emailAddress", "").lower() == (payload.get("recipient") or "").lower():
            status = status or _str(recipient.get("status"))
    if esp.get("error"):  # Mailjet names the cause only here
        texts.append(" ".join(filter(None, [_str(esp.get("error")), _str(esp.get("comment"))])))
    diagnostic = " | ".join(dict.fromkeys(t for t in texts if t)) or None
    code = code if code and code[:1] in "45" and len(code) == 3 else None
    code = code or find_reply_code(_head(diagnostic))
    status = status if status and status[:1] in "245" else None
    status = status or find_last_status(diagnostic)
    return code, status, diagnostic


def _head(text: str | None) -> str | None:
    # A reply code is trusted near the start ("smtp; 550 ...", "550 5.1.1 ..."): three digits
    # deeper in the text are as likely a port or a size.
    return text[:40] if text else None


def _str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _timestamp(value: str | None) -> datetime:
    parsed = parse_datetime(value) if value else None
    return parsed or timezone.now()


def _delivery_event_id(stored: WebhookEvent, payload: Mapping[str, Any]) -> str:
    # One ESP event can name several recipients (Amazon SES sends one notification id for
    # all of them), so the recipient is part of the key; the ESP's name keeps ids of
    # different ESPs apart.
    key = f"{stored.esp}:{stored.event_id}:{(payload.get('recipient') or '').lower()}"
    if len(key) > 255:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key
