from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from accounts.demo_story import STORY_CLIENTS
from accounts.models import Membership
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression, WebhookEvent
from invoicing.models import Invoice, Payment
from mailsync.models import (
    MailboxConnection,
    Message,
    MessageAttachment,
    MessageClientLink,
    MessageSource,
)
from portal.models import Client, ContactAddress, Document, OutboxEmail
from troubleshooting.models import DomainCheckRun

S = Delivery.Status


def test_it_creates_the_demo_firm_people_and_fifty_clients_besides_the_story(db, settings):
    settings.DEBUG = True
    call_command("seed_demo")
    assert Client.objects.count() == 50 + len(STORY_CLIENTS)
    assert Membership.objects.count() == 3
    assert ContactAddress.objects.filter(is_primary=True).count() >= 50
    assert Document.objects.filter(original_name__startswith="engagement-letter-").count() >= 5


def _counts() -> dict[str, int]:
    models = [
        Client, ContactAddress, Document, Invoice, Delivery, DeliveryEvent, Payment,
        Suppression, WebhookEvent, OutboxEmail, MailboxConnection, Message, MessageSource,
        MessageClientLink, MessageAttachment,
        DomainCheckRun, Membership,
    ]  # fmt: skip
    return {model.__name__: model.objects.count() for model in models}


def test_running_it_twice_changes_nothing(db, settings):
    settings.DEBUG = True
    call_command("seed_demo")
    first = _counts()
    call_command("seed_demo")
    assert _counts() == first


@pytest.fixture
def seeded(db, settings):
    settings.DEBUG = True
    call_command("seed_demo")


def _delivery(address: str) -> Delivery:
    return Delivery.objects.get(normalized=address)


def test_invoices_exist_in_every_state(seeded):
    states = set(Invoice.objects.values_list("status", flat=True))
    assert states == set(Invoice.Status.values)


def test_the_paid_invoice_was_paid_through_the_offline_payment_path(seeded):
    payment = Payment.objects.get()
    assert payment.provider == "offline"
    assert payment.invoice.status == Invoice.Status.PAID


def test_a_client_address_hard_bounced_and_is_blocked(seeded):
    delivery = _delivery("bounce@simulator.demo.test")
    assert delivery.status == S.BOUNCED
    assert Suppression.objects.filter(normalized=delivery.normalized).exists()


def test_a_complaint_arrived_through_the_esp_event_path(seeded):
    delivery = _delivery("complaint@simulator.demo.test")
    assert delivery.events.filter(kind=S.COMPLAINED, source="webhook").exists()


def test_synced_mail_with_attachments_sits_on_several_clients(seeded):
    assert MessageClientLink.objects.values("client").distinct().count() >= 3
    attached = MessageAttachment.objects.filter(document__isnull=False)
    assert attached.values("client").distinct().count() >= 3


def test_a_mailbox_needs_re_authentication_naming_its_member(seeded):
    mailbox = MailboxConnection.objects.get(email_address="mikko.staff@demo.test")
    assert mailbox.health == MailboxConnection.Health.NEEDS_REAUTH
    assert mailbox.owner.email == "mikko.staff@demo.test"


def test_the_failing_mailbox_is_named_on_a_client_it_reaches(seeded, client):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(email="owner@demo.test"))
    nowak = Client.objects.get(display_name="Nowak Bakery")
    body = client.get(f"/clients/{nowak.pk}/problems/").content.decode()
    assert "sync.auth_failed" in body
    assert "Mikko" in body


def test_a_domain_check_has_a_record_to_publish(seeded):
    run = DomainCheckRun.objects.get()
    assert run.failures


def test_it_refuses_to_run_in_production(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")


def test_the_demo_owner_can_sign_in_and_open_a_client(db, settings, client):
    settings.DEBUG = True
    call_command("seed_demo")
    client.post("/accounts/login/", {"login": "owner@demo.test", "password": "demo-portal-2026"})
    first = Client.objects.order_by("display_name").first()
    response = client.get(first.get_absolute_url())
    assert first.display_name in response.content.decode()
