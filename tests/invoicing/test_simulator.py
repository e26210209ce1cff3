"""The mail simulator: documented demo addresses answer as real mail systems do, and the
portal records each answer through the code that handles the real one."""

from __future__ import annotations

import pytest

from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression, WebhookEvent
from invoicing.delivery.sender import deliveries_send
from invoicing.delivery.simulator import SIMULATOR_DOMAIN, outcomes_held, outcomes_run
from invoicing.sending import invoice_send
from portal.models import OutboxEmail
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing.factories import invoice_with_lines

S = Delivery.Status


@pytest.fixture(autouse=True)
def _simulator(settings):
    settings.EMAIL_BACKEND = "invoicing.delivery.simulator.SimulatorBackend"
    settings.DELIVERY_SOFT_RETRY_MINUTES = []


def _send_to(firm, local: str) -> Delivery:
    client = ClientFactory(firm=firm)
    contact = ContactFactory(client=client)
    ContactAddressFactory(contact=contact, address=f"{local}@{SIMULATOR_DOMAIN}")
    invoice = invoice_with_lines(client=client)
    (delivery,) = invoice_send(invoice=invoice)
    with outcomes_held() as later:
        deliveries_send(delivery_ids=[delivery.pk])
    outcomes_run(later)
    delivery.refresh_from_db()
    return delivery


def _timeline(delivery: Delivery) -> list[str]:
    return list(delivery.events.order_by("occurred_at", "pk").values_list("kind", flat=True))


def test_success_is_kept_in_the_outbox_and_reported_delivered_by_an_esp_event(firm):
    delivery = _send_to(firm, "success")
    assert delivery.status == S.DELIVERED
    assert _timeline(delivery) == [S.SENT, S.DELIVERED]
    assert OutboxEmail.objects.filter(recipients=f"success@{SIMULATOR_DOMAIN}").count() == 1
    assert WebhookEvent.objects.get(esp="simulator").processed_at is not None


def test_bounce_is_refused_at_send_time_as_user_unknown_and_blocks_the_address(firm):
    delivery = _send_to(firm, "bounce")
    assert delivery.status == S.BOUNCED
    event = delivery.events.get(kind=S.BOUNCED)
    assert (event.reply_code, event.status_code) == ("550", "5.1.1")
    assert Suppression.objects.filter(firm=firm, normalized=delivery.normalized).exists()
    assert not OutboxEmail.objects.filter(recipients=delivery.address).exists()


@pytest.mark.parametrize("local", ["soft", "mailbox-full"])
def test_a_full_mailbox_is_a_soft_bounce_at_send_time(firm, local):
    delivery = _send_to(firm, local)
    assert delivery.status == S.SOFT_BOUNCED
    assert delivery.events.get(kind=S.SOFT_BOUNCED).reply_code == "452"
    assert not Suppression.objects.filter(normalized=delivery.normalized).exists()


def test_policy_is_a_rejection_not_a_dead_address(firm):
    delivery = _send_to(firm, "policy")
    assert delivery.status == S.REJECTED
    assert delivery.events.get(kind=S.REJECTED).reply_code == "554"


def test_complaint_arrives_later_through_the_esp_event_path(firm):
    delivery = _send_to(firm, "complaint")
    assert _timeline(delivery) == [S.SENT, S.COMPLAINED]
    assert delivery.events.get(kind=S.COMPLAINED).source == DeliveryEvent.Source.WEBHOOK


def test_a_late_bounce_arrives_as_a_delivery_report_read_by_the_bounce_mailbox_code(firm):
    delivery = _send_to(firm, "bounce-later")
    assert _timeline(delivery) == [S.SENT, S.BOUNCED]
    assert delivery.events.get(kind=S.BOUNCED).source == DeliveryEvent.Source.DSN


def test_delayed_is_reported_as_a_delay_not_a_bounce(firm):
    delivery = _send_to(firm, "delayed")
    assert _timeline(delivery) == [S.SENT, S.DEFERRED]


def test_an_out_of_office_reply_is_not_a_bounce(firm):
    delivery = _send_to(firm, "ooto")
    assert delivery.status == S.SENT
    assert _timeline(delivery) == [S.SENT]


def test_later_outcomes_are_queued_as_a_task_when_not_held(firm, settings, monkeypatch):
    from invoicing.delivery import simulator

    queued = []
    monkeypatch.setattr(
        simulator.simulator_outcome_task,
        "apply_async",
        lambda kwargs, countdown: queued.append((kwargs["kind"], countdown)),
    )
    settings.EMAIL_SIMULATOR_DELAY_SECONDS = 20
    client = ClientFactory(firm=firm)
    ContactAddressFactory(
        contact=ContactFactory(client=client), address=f"complaint@{SIMULATOR_DOMAIN}"
    )
    (delivery,) = invoice_send(invoice=invoice_with_lines(client=client))
    deliveries_send(delivery_ids=[delivery.pk])
    assert queued == [("complained", 20)]


def test_other_addresses_are_kept_in_the_outbox_as_sent(firm):
    delivery = _send_to(firm, "anyone-else")
    assert delivery.status == S.SENT


def test_with_the_simulator_the_demo_people_can_send_a_test_to_themselves():
    """The embedded run allows `.test` without being told, so "Send a test to myself"
    works for owner@demo.test (a fresh interpreter: the settings decide at import)."""
    import os
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if k != "ADDRESS_ALLOWED_SPECIAL_DOMAINS"},
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "EMAIL_BACKEND": "invoicing.delivery.simulator.SimulatorBackend",
    }
    code = (
        "import django; django.setup(); from portal.addresses import validate_address; "
        "print(validate_address('owner@demo.test').normalized)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "owner@demo.test", result.stderr[-2000:]
