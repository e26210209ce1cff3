"""ESP webhooks that arrive before their delivery is recorded are kept, not dropped.

Through an ESP a delivery learns the ESP's message id only when the sender records its group,
after the email left; a fast ESP reports "delivered" before that. Such an event waits (stays
pending) for settings.WEBHOOK_UNMATCHED_GRACE_MINUTES and is matched as soon as the sender
records; past the grace, an event nothing matches is closed as unmatched.

The ESP here is anymail's test backend (the sender reads its per-recipient answer as it reads
any ESP's); its webhooks are Postmark's, posted to anymail's real tracking URL.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from anymail.backends.test import EmailBackend as AnymailTestBackend
from django.core import mail
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.models import Delivery, DeliveryEvent, WebhookEvent
from invoicing.delivery.sender import SENDING_LEASE
from invoicing.delivery.tasks import (
    webhook_event_process_task,
    webhook_events_match_waiting_task,
    webhook_events_sweep_task,
)
from invoicing.delivery.webhook_events import WAITING_FOR_DELIVERY
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.invoicing.test_webhooks import AUTH, SECRET, postmark_bounce, postmark_delivery

tasks_run_inline = factories.tasks_run_inline
S = Delivery.Status
POSTMARK = "/webhooks/anymail/postmark/tracking/"


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = ""  # an ESP reports bounces by webhook
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}


def _webhook(body: dict) -> None:
    """Postmark posts an event. Nothing runs on commit here: the test runs the tasks."""
    response = HttpClient().post(
        POSTMARK,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": AUTH},
    )
    assert response.status_code == 200


def _age(event: WebhookEvent, minutes: float) -> None:
    WebhookEvent.objects.filter(pk=event.pk).update(
        received=timezone.now() - timedelta(minutes=minutes)
    )


class QuickEsp(AnymailTestBackend):
    """An ESP that reports delivery while the send call has not returned yet: its webhook is
    posted, and processed as a worker would, before the sender gets to record the group."""

    seen_by_the_webhook: list[tuple[str, str, str]] = []

    def get_esp_message_id(self, message):
        return f"pm-{mail.outbox.index(message)}"

    def post_to_esp(self, payload, message):
        response = super().post_to_esp(payload, message)
        for address, status in response["recipient_status"].items():
            _webhook(postmark_delivery(status.message_id, email=address))
            webhook_event_process_task()
            event = WebhookEvent.objects.latest("pk")
            delivery = Delivery.objects.get(address=address)
            self.seen_by_the_webhook.append((delivery.status, delivery.esp_message_id, event.error))
        return response


@pytest.fixture
def quick_esp(settings):
    settings.EMAIL_BACKEND = f"{__name__}.QuickEsp"
    QuickEsp.seen_by_the_webhook = []
    return QuickEsp


@pytest.mark.usefixtures("tasks_run_inline")
def test_a_delivered_webhook_processed_before_the_record_step_is_applied_once_recorded(
    staff_client, firm, quick_esp, django_capture_on_commit_callbacks
):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@birch.test")
    invoice = invoice_with_lines(client=client)

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:invoice_send", args=[invoice.pk]))

    # When the webhook was processed, the delivery was still "sending", without the ESP's id:
    # the event was kept waiting instead of being dropped ...
    [(status, esp_message_id, error)] = quick_esp.seen_by_the_webhook
    assert (status, esp_message_id) == (S.SENDING, "")
    assert error.startswith(WAITING_FOR_DELIVERY)
    # ... and the sender's record step had it matched at once, not at the next sweep.
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.esp_message_id) == (S.DELIVERED, "pm-0")
    assert list(delivery.events.order_by("pk").values_list("kind", "source")) == [
        ("sent", "smtp"),
        ("delivered", "webhook"),
    ]
    stored = WebhookEvent.objects.get()
    assert stored.processed_at is not None and stored.error == ""
    page = staff_client.get(invoice.get_absolute_url()).content.decode()
    assert "Delivered" in page


def _sent_delivery(firm, address="anna@birch.test", esp_message_id="pm-ours") -> Delivery:
    client = ClientFactory(firm=firm)
    invoice = invoice_with_lines(client=client, status="sent")
    return Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address=address,
        normalized=address,
        status=S.SENT,
        esp_message_id=esp_message_id,
        verp_token=address.split("@")[0],
    )


def test_an_event_is_matched_by_the_sweep_once_its_delivery_is_recorded(firm):
    _webhook(postmark_bounce("pm-late", email="anna@birch.test"))
    webhook_event_process_task()
    stored = WebhookEvent.objects.get()
    assert stored.processed_at is None
    # A sender that died before recording leaves the sweep to do it: the record came later.
    delivery = _sent_delivery(firm, esp_message_id="pm-late")
    _age(stored, 1)

    assert webhook_events_sweep_task() == 1

    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.BOUNCED, "delivery.hard_bounce")
    stored.refresh_from_db()
    assert stored.processed_at is not None


def test_an_unmatched_event_waits_through_the_grace_and_is_closed_after_it(firm, settings):
    grace = settings.WEBHOOK_UNMATCHED_GRACE_MINUTES
    _webhook(postmark_delivery("pm-not-ours"))
    webhook_event_process_task()
    stored = WebhookEvent.objects.get()

    _age(stored, grace - 1)
    assert webhook_events_sweep_task() == 1
    stored.refresh_from_db()
    assert stored.processed_at is None
    assert stored.error.startswith(WAITING_FOR_DELIVERY)

    _age(stored, grace + 1)
    assert webhook_events_sweep_task() == 1
    stored.refresh_from_db()
    assert stored.processed_at is not None
    assert stored.error == ""
    assert not DeliveryEvent.objects.exists()
    assert webhook_events_sweep_task() == 0


def test_a_foreign_event_does_not_block_the_others_and_nothing_spins_on_it(firm):
    ours = _sent_delivery(firm)
    _webhook(postmark_delivery("pm-another-system", email="someone@else.test"))
    _webhook(postmark_delivery(ours.esp_message_id, email=ours.address))

    assert webhook_event_process_task() == 2
    ours.refresh_from_db()
    assert ours.status == S.DELIVERED
    foreign = WebhookEvent.objects.get(processed_at__isnull=True)
    assert foreign.error.startswith(WAITING_FOR_DELIVERY)

    # The drain behind the next kick leaves it alone; each pass by id tries it once.
    assert webhook_event_process_task() == 0
    assert webhook_events_match_waiting_task() == 1
    _age(foreign, 1)
    assert webhook_events_sweep_task() == 1
    foreign.refresh_from_db()
    assert foreign.processed_at is None


def test_the_grace_outlasts_the_senders_lease(settings):
    lease_minutes = SENDING_LEASE.total_seconds() / 60
    assert lease_minutes + 10 <= settings.WEBHOOK_UNMATCHED_GRACE_MINUTES
