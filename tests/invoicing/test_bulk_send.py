"""Sending many invoices at once, and processing stored webhooks in batches."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from invoicing import enqueue
from invoicing.delivery import sender
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression, WebhookEvent
from invoicing.delivery.tasks import deliveries_send_task
from invoicing.delivery.webhook_events import WAITING_FOR_DELIVERY, webhook_events_process_batch
from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_token_hash
from invoicing.sending import invoices_send_bulk
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

pytestmark = pytest.mark.usefixtures("tasks_run_inline")

PAY_LINK = re.compile(r"http://testserver/pay/([A-Za-z0-9_-]{43})/")


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"


def _client(firm, *addresses, name="Birch Dental"):
    client = ClientFactory(firm=firm, display_name=name)
    contact = ContactFactory(client=client, name="Anna")
    for address in addresses:
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    return client


def test_bulk_sends_one_email_per_recipient_with_own_links(
    firm, smtp, django_capture_on_commit_callbacks
):
    first = invoice_with_lines(client=_client(firm, "a1@client.test", "a2@client.test"))
    second = invoice_with_lines(client=_client(firm, "b@client.test", name="Oak Ltd"))
    Suppression.objects.create(
        firm=firm, normalized="a2@client.test", reason=Suppression.Reason.HARD_BOUNCE
    )
    void = invoice_with_lines(client=_client(firm, "v@client.test"), status=Invoice.Status.VOID)
    empty = factories.InvoiceFactory(client=_client(firm, "e@client.test"))

    with django_capture_on_commit_callbacks(execute=True):
        result = invoices_send_bulk(invoices=[first, second, void, empty])

    assert set(result.refused) == {void.pk, empty.pk}
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == ["a1@client.test", "b@client.test"]
    tokens = set()
    for received in smtp.received:
        delivery = Delivery.objects.get(address=received.rcpt_tos[0])
        assert delivery.status == Delivery.Status.SENT
        assert received.mail_from == f"bounces+{delivery.verp_token}@bounce.test"
        assert received.message["Message-ID"] == delivery.message_id
        text = received.message.get_body(("plain",)).get_content()
        token = PAY_LINK.search(text).group(1)
        assert delivery.pay_link.token_hash == pay_token_hash(token)
        assert "Total: 200.00 EUR" in text
        tokens.add(token)
    assert len(tokens) == 2
    skipped = Delivery.objects.get(normalized="a2@client.test")
    assert (skipped.status, skipped.problem_code) == ("suppressed", "delivery.suppressed")
    for invoice in (first, second):
        invoice.refresh_from_db()
        assert invoice.status == Invoice.Status.SENT
    void.refresh_from_db()
    assert void.status == Invoice.Status.VOID


def test_bulk_queues_chunks_and_renews_old_links(firm, django_capture_on_commit_callbacks):
    invoices = [
        invoice_with_lines(client=_client(firm, f"c{n}@client.test", name=f"C{n}"))
        for n in range(5)
    ]
    queued: list[list[int]] = []
    with (
        mock.patch.object(enqueue, "SEND_CHUNK", 2),
        mock.patch.object(deliveries_send_task, "delay", side_effect=queued.append),
        django_capture_on_commit_callbacks(execute=True),
    ):
        invoices_send_bulk(invoices=invoices)
        # The first send has an outcome, so the invoice may be sent again.
        Delivery.objects.filter(invoice=invoices[0]).update(status=Delivery.Status.SENT)
        old = PayLink.objects.create(
            invoice=invoices[0],
            delivery=Delivery.objects.filter(invoice=invoices[0]).get(),
            token_hash="0" * 64,
            expires_at="2099-01-01T00:00:00Z",
        )
        invoices_send_bulk(invoices=invoices[:1])
    assert [len(chunk) for chunk in queued] == [2, 2, 1, 1]
    old.refresh_from_db()
    assert old.revoked_at is not None


def test_a_send_chunk_uses_one_connection(firm, smtp, django_capture_on_commit_callbacks):
    invoices = [
        invoice_with_lines(client=_client(firm, f"d{n}@client.test", name=f"D{n}"))
        for n in range(3)
    ]
    with (
        mock.patch(
            "invoicing.delivery.sender.get_connection", wraps=sender.get_connection
        ) as opened,
        django_capture_on_commit_callbacks(execute=True),
    ):
        invoices_send_bulk(invoices=invoices)
    assert opened.call_count == 1
    assert len(smtp.received) == 3


def _stored(delivery, record_type="Delivery", event_id="1"):
    payload = {
        "event_type": "delivered" if record_type == "Delivery" else "bounced",
        "message_id": delivery.esp_message_id,
        "recipient": delivery.address,
        "event_id": event_id,
        "mta_response": None if record_type == "Delivery" else "smtp;550 5.1.1 unknown user",
        "description": None,
        "reject_reason": None,
        "timestamp": None,
        "esp_event": {},
    }
    return WebhookEvent.objects.create(esp="postmark", event_id=event_id, payload=payload)


def test_webhook_batch_records_each_event_once_and_never_backwards(firm):
    client = _client(firm, "w@client.test")
    invoice = invoice_with_lines(client=client)
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address="w@client.test",
        normalized="w@client.test",
        status=Delivery.Status.SENT,
        esp_message_id="<esp-1>",
        verp_token="t" * 32,
    )
    _stored(delivery, "Bounce", "b1")
    _stored(delivery, "Delivery", "d1")
    _stored(delivery, "Bounce", "b1")  # the ESP retried its post
    other = WebhookEvent.objects.create(
        esp="postmark", event_id="x", payload={"event_type": "delivered", "message_id": "nope"}
    )

    assert webhook_events_process_batch() == 4
    assert webhook_events_process_batch() == 0

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.BOUNCED
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == 2
    assert Suppression.objects.filter(normalized="w@client.test").exists()
    assert list(WebhookEvent.objects.filter(processed_at=None)) == [other]
    # No delivery has its message id (yet): it waits, and is not claimed again in a loop.
    other.refresh_from_db()
    assert other.error.startswith(WAITING_FOR_DELIVERY)


def test_a_failing_webhook_batch_falls_back_to_one_by_one(firm, settings):
    # Older than the grace for unmatched events: closed as unmatched.
    event = WebhookEvent.objects.create(
        esp="postmark", event_id="y", payload={"event_type": "delivered", "message_id": "m"}
    )
    WebhookEvent.objects.filter(pk=event.pk).update(
        received=timezone.now() - timedelta(minutes=settings.WEBHOOK_UNMATCHED_GRACE_MINUTES + 1)
    )
    with mock.patch(
        "invoicing.delivery.webhook_events._batch_apply", side_effect=RuntimeError("boom")
    ):
        assert webhook_events_process_batch() == 1
    event.refresh_from_db()
    assert event.processed_at is not None  # done by the one-by-one path
    assert json.dumps(event.payload)


def test_send_all_drafts_sends_the_firms_drafts_and_explains_the_rest(
    staff_client, firm, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
    from tests.invoicing.factories import InvoiceFactory, invoice_with_lines

    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")
    ready = invoice_with_lines(client=client)
    empty = InvoiceFactory(client=client)  # no lines: refused with the reason
    other_firm = invoice_with_lines(client=ClientFactory())
    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(reverse("invoicing:invoices_send_drafts"), follow=True)
    body = response.content.decode()
    assert "1 invoice is being sent." in body
    assert f"Invoice #{empty.number} was not sent" in body
    assert ready.deliveries.count() == 1
    assert not other_firm.deliveries.exists()
