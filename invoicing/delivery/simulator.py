"""A mailbox simulator in the local outbox, as Amazon SES's is: addresses that bounce on cue.

Mail to the documented addresses at `SIMULATOR_DOMAIN` gets the answer a real mail system
would give, through the code that handles real answers:

- refused while sending (`bounce@`, `soft@`, `mailbox-full@`, `policy@`): the backend raises
  `smtplib.SMTPRecipientsRefused` as Django's SMTP backend does, so the sender records it as it
  records a real server's refusal (suppression rules, soft retries, problems);
- answered later by a delivery report (`bounce-later@`, `delayed@`, `ooto@`): a DSN (or an
  out-of-office reply) goes through `bounce_message_process`, the bounce mailbox reader's;
- answered later by an ESP event (`success@` delivered, `complaint@`): an anymail tracking
  event stored and processed as the ESP webhook's are.

Everything else is kept in the outbox as `OutboxBackend` keeps it. Later answers run in a
Celery task `EMAIL_SIMULATOR_DELAY_SECONDS` after the send, so a timeline shows "sent" and
then what happened; `outcomes_held` collects them instead, for tests and `seed_demo`, which
then call `outcomes_run`.
"""

from __future__ import annotations

import contextlib
import secrets
import smtplib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import timedelta
from email.utils import format_datetime, make_msgid

from anymail.message import AnymailRecipientStatus, AnymailStatus
from anymail.signals import AnymailTrackingEvent
from celery import shared_task
from django.conf import settings
from django.core.mail.message import EmailMessage
from django.utils import timezone

from invoicing.emails import DELIVERY_METADATA_KEY
from portal.mail_outbox import OutboxBackend

SIMULATOR_DOMAIN = "simulator.demo.test"
ESP_NAME = "simulator"

# Refused at send time: (SMTP reply code, the server's text).
REFUSALS: dict[str, tuple[int, str]] = {
    "bounce": (550, "5.1.1 <{address}>: Recipient address rejected: User unknown"),
    "soft": (452, "4.2.2 <{address}>: Mailbox full, try again later"),
    "mailbox-full": (452, "4.2.2 <{address}>: Mailbox full, try again later"),
    "policy": (554, "5.7.1 <{address}>: Message rejected by the recipient's policy"),
}
# Accepted, then answered later: the local part and what comes back.
LATER = {
    "success": "delivered",
    "complaint": "complained",
    "bounce-later": "bounce",
    "delayed": "delayed",
    "ooto": "auto_reply",
}


@dataclass(frozen=True)
class LaterOutcome:
    """What the simulated recipient's system does after accepting one message."""

    kind: str
    recipient: str
    message_id: str  # the Message-ID header a delivery report quotes
    esp_message_id: str  # the id an ESP event names
    delivery_token: str  # the metadata an ESP echoes (`emails.DELIVERY_METADATA_KEY`)


_held: ContextVar[list[LaterOutcome] | None] = ContextVar("simulator_held", default=None)


def scenario(address: str) -> str | None:
    """The simulator's local part for an address at its domain, else None."""
    local, _at, domain = address.strip().rpartition("@")
    if domain.lower() != SIMULATOR_DOMAIN or not local:
        return None
    return local.lower().split("+", 1)[0]  # success+anything@ behaves as success@


class SimulatorBackend(OutboxBackend):
    """The local outbox, with the simulator's addresses answering as real ones do."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = 0
        for message in email_messages:
            sent += self._send(message)
        return sent

    def _send(self, message: EmailMessage) -> int:
        recipients = message.recipients()
        refused = {}
        for address in recipients:
            refusal = REFUSALS.get(scenario(address) or "")
            if refusal is not None:
                code, text = refusal
                refused[address] = (code, text.format(address=address).encode())
        if refused and len(refused) == len(recipients):
            # What smtplib raises when the server refuses every RCPT TO.
            raise smtplib.SMTPRecipientsRefused(refused)
        accepted = [address for address in recipients if address not in refused]
        kept = _with_recipients(message, accepted)
        if not super().send_messages([kept]):
            return 0
        message_id = str(message.extra_headers.get("Message-ID") or "")
        if not message_id:
            message_id = str(kept.message()["Message-ID"] or "")
        metadata = getattr(message, "metadata", None) or {}
        token = str(metadata.get(DELIVERY_METADATA_KEY) or "")
        statuses = {}
        for address in accepted:
            esp_id = f"sim-{secrets.token_hex(12)}"
            statuses[address] = AnymailRecipientStatus(message_id=esp_id, status="sent")
            kind = LATER.get(scenario(address) or "")
            if kind is not None:
                _schedule(LaterOutcome(kind, address, message_id, esp_id, token))
        # What an anymail backend reports: the sender stores each recipient's ESP id.
        status = AnymailStatus()
        status.set_recipient_status(statuses)
        message.anymail_status = status  # type: ignore[attr-defined]
        return 1


def _with_recipients(message: EmailMessage, recipients: list[str]) -> EmailMessage:
    if set(recipients) == set(message.recipients()):
        return message
    # A partly refused message reaches only the accepted recipients, as with SMTP.
    message.to = [a for a in message.to if a in recipients]
    message.cc = [a for a in message.cc if a in recipients]
    message.bcc = [a for a in message.bcc if a in recipients]
    return message


def _schedule(outcome: LaterOutcome) -> None:
    held = _held.get()
    if held is not None:
        held.append(outcome)
        return
    simulator_outcome_task.apply_async(
        kwargs=asdict(outcome), countdown=settings.EMAIL_SIMULATOR_DELAY_SECONDS
    )


@contextlib.contextmanager
def outcomes_held() -> Iterator[list[LaterOutcome]]:
    """Collect the later answers of what is sent inside, instead of queueing tasks."""
    held: list[LaterOutcome] = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def outcomes_run(outcomes: Sequence[LaterOutcome]) -> None:
    for outcome in outcomes:
        outcome_deliver(outcome)


def outcome_deliver(outcome: LaterOutcome) -> None:
    """Hand one later answer to the code that handles real ones."""
    if outcome.kind in ("delivered", "complained"):
        _esp_event(outcome)
    else:
        from invoicing.delivery.dsn_mailbox import bounce_message_process

        bounce_message_process(raw=report_message(outcome))


def _esp_event(outcome: LaterOutcome) -> None:
    from invoicing.delivery.models import WebhookEvent
    from invoicing.delivery.webhook_events import webhook_event_process
    from invoicing.delivery.webhooks import (
        stable_event_id,
        tracking_event_payload,
        webhook_events_store,
    )

    event = AnymailTrackingEvent(
        event_type=outcome.kind,
        timestamp=timezone.now(),
        event_id=f"{outcome.esp_message_id}:{outcome.kind}",
        message_id=outcome.esp_message_id,
        recipient=outcome.recipient,
        metadata={DELIVERY_METADATA_KEY: outcome.delivery_token} if outcome.delivery_token else {},
        description="Simulated by the demo mail simulator",
        esp_event={"simulator": outcome.kind},
    )
    payload = tracking_event_payload(event)
    existing = WebhookEvent.objects.filter(
        esp=ESP_NAME, event_id=stable_event_id(ESP_NAME, payload)
    ).first()
    if existing is None:
        existing = WebhookEvent(
            esp=ESP_NAME, event_id=stable_event_id(ESP_NAME, payload), payload=payload
        )
        webhook_events_store([existing])
    # At once rather than at the next kick: the demo's timeline moves while one watches.
    webhook_event_process(webhook_event_id=existing.pk)


def report_message(outcome: LaterOutcome) -> bytes:
    """The delivery report (or out-of-office reply) a receiving system would send."""
    # A Date header has whole seconds: rounded up, so the report never looks older than the
    # send it answers.
    now = format_datetime(timezone.now().replace(microsecond=0) + timedelta(seconds=1))
    own_id = make_msgid(domain=SIMULATOR_DOMAIN)
    if outcome.kind == "auto_reply":
        return (
            f"From: <{outcome.recipient}>\r\nTo: <no-reply@portal.localhost>\r\n"
            f"Subject: Automatic reply: out of office\r\nDate: {now}\r\n"
            f"Message-ID: {own_id}\r\nIn-Reply-To: {outcome.message_id}\r\n"
            "Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "I am out of the office until Monday and will read your message then.\r\n"
        ).encode()
    if outcome.kind == "delayed":
        action, status, diagnostic = "delayed", "4.4.7", "4.4.7 Delivery delayed: no answer yet"
        human = "Delivery to this address is delayed; the server is still trying."
    else:
        action, status = "failed", "5.1.1"
        diagnostic = f"550 5.1.1 <{outcome.recipient}>: Recipient address rejected: User unknown"
        human = "Delivery to this address failed permanently: the mailbox does not exist."
    boundary = f"sim-{secrets.token_hex(8)}"
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{SIMULATOR_DOMAIN}>\r\n"
        f"To: <no-reply@portal.localhost>\r\nSubject: Delivery Status Notification\r\n"
        f"Date: {now}\r\nMessage-ID: {own_id}\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
        f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{human}\r\n"
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.{SIMULATOR_DOMAIN}\r\n\r\n"
        f"Final-Recipient: rfc822; {outcome.recipient}\r\nAction: {action}\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n"
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {outcome.message_id}\r\nTo: <{outcome.recipient}>\r\n"
        f"\r\n--{boundary}--\r\n"
    ).encode()


@shared_task(name="invoicing.delivery.simulator_outcome", ignore_result=True)
def simulator_outcome_task(**fields: str) -> None:
    outcome_deliver(LaterOutcome(**fields))
