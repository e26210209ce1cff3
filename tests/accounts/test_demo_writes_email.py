"""The demo shows writing to a client: Anna's mailbox sends through the demo's own sending
server on loopback (mailsync.demo_smtp, started by scripts/run.sh), and the email is on the
client's Email tab and in the owner's Outbox, never in anyone's real inbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.urls import reverse

from accounts.models import User
from mailsync.demo_smtp import demo_smtp_server
from mailsync.models import WrittenEmail
from mailsync.outgoing import outgoing_for
from portal.models import Client, OutboxEmail
from tests.mailsync.writing import compose_url, press_send
from tests.servers.dovecot import free_port


@pytest.fixture
def demo_smtp(settings) -> Iterator[int]:
    settings.DEMO_SMTP_PORT = free_port()
    server = demo_smtp_server(settings.DEMO_SMTP_PORT)
    server.start()
    yield settings.DEMO_SMTP_PORT
    server.stop()


@pytest.fixture
def demo(transactional_db, settings, demo_smtp):
    settings.DEBUG = True
    call_command("seed_demo")


def _signed_in(email: str) -> HttpClient:
    http = HttpClient()
    http.force_login(User.objects.get(email=email))
    return http


def test_anna_writes_to_a_client_and_the_owner_finds_it_in_the_outbox(demo):
    anna = _signed_in("anna.staff@demo.test")
    client = Client.objects.filter(contacts__addresses__isnull=False).order_by("pk").first()
    address = client.contacts.first().addresses.first()
    sender = outgoing_for(User.objects.get(email="anna.staff@demo.test"), client)

    landed = press_send(
        anna,
        compose_url(client),
        {
            "sender": sender.pk,
            "recipients": [address.pk],
            "subject": "Your documents for the year-end",
            "body": "Hello, could you send the bank statements?",
        },
    )

    assert landed["Location"] == reverse("mailsync:client_email", args=[client.pk])
    assert WrittenEmail.objects.get().status == WrittenEmail.Status.SENT
    kept = OutboxEmail.objects.get(subject="Your documents for the year-end")
    assert kept.firm_id == client.firm_id and kept.recipients == address.address
    owner_outbox = _signed_in("owner@demo.test").get(reverse("portal:outbox")).content.decode()
    assert "Your documents for the year-end" in owner_outbox
    tab = anna.get(landed["Location"]).content.decode()
    assert "Email sent." in tab and "Your documents for the year-end" in tab


def test_the_demo_sending_server_does_not_start_with_debug_off(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG=1"):
        call_command("demo_smtp", port=free_port())
