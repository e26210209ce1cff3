"""Sending an invoice: one email per recipient through a real SMTP server on loopback."""

from __future__ import annotations

import re
import smtplib
from email.utils import parseaddr

import pytest
from django.core import mail
from django.urls import reverse

from invoicing.delivery.models import Delivery
from invoicing.delivery.sender import deliveries_send
from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_token_hash
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures
from tests.servers.smtp import FULL, POLICY, UNKNOWN

# The loopback SMTP server and inline Celery, as fixtures of this module.
smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

pytestmark = pytest.mark.usefixtures("tasks_run_inline")

PAY_LINK = re.compile(r"http://testserver/pay/([A-Za-z0-9_-]{43})/")


@pytest.fixture
def billing_firm(firm):
    firm.sender_name = "Alder & Birch"
    firm.reply_to_email = "billing@alder.test"
    firm.save()
    return firm


def _client_with(firm, *addresses, name="Birch Dental"):
    client = ClientFactory(firm=firm, display_name=name)
    contact = ContactFactory(client=client, name="Anna")
    for address in addresses:
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    return client


def _send(http, invoice, capture):
    with capture(execute=True):
        return http.post(reverse("invoicing:invoice_send", args=[invoice.pk]), follow=True)


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []  # retries have tests of their own below
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"


def test_it_sends_one_email_per_recipient_with_its_own_pay_link(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    client = ClientFactory(firm=billing_firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")
    second = ContactFactory(client=client)
    ContactAddressFactory(contact=second, address="ben@client.test")
    ContactAddressFactory(contact=second, address="ben@home.test", is_primary=False)
    ContactAddressFactory(contact=second, address="nope@client.test", receives_invoices=False)
    invoice = invoice_with_lines(client=client, notes="Thanks for your business")

    _send(staff_client, invoice, django_capture_on_commit_callbacks)

    assert sorted(r.rcpt_tos[0] for r in smtp.received) == [
        "anna@client.test",
        "ben@client.test",
        "ben@home.test",
    ]
    tokens = set()
    for received in smtp.received:
        delivery = Delivery.objects.get(address=received.rcpt_tos[0])
        message = received.message
        assert len(received.rcpt_tos) == 1
        assert parseaddr(message["From"]) == ("Alder & Birch", "no-reply@portal.test")
        assert message["Reply-To"] == "billing@alder.test"
        assert received.mail_from == f"bounces+{delivery.verp_token}@bounce.test"
        assert message["Message-ID"] == delivery.message_id
        assert message["X-Portal-Firm"] == str(billing_firm.pk)
        assert (
            message["Subject"] == f"Invoice #{invoice.number} from Alder & Birch for Birch Dental"
        )
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        token = PAY_LINK.search(text).group(1)
        assert f'href="http://testserver/pay/{token}/"' in html
        assert "Pay Now" in html
        assert "Thanks for your business" in text
        assert delivery.pay_link.token_hash == pay_token_hash(token)
        assert delivery.status == Delivery.Status.SENT
        tokens.add(token)
    assert len(tokens) == 3
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT
    assert invoice.sent_at is not None


def test_each_refusal_becomes_the_right_event_and_the_accepted_one_is_sent(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    client = _client_with(billing_firm, "ok@client.test", UNKNOWN, FULL, POLICY)
    invoice = invoice_with_lines(client=client)

    response = _send(staff_client, invoice, django_capture_on_commit_callbacks)

    assert [r.rcpt_tos for r in smtp.received] == [["ok@client.test"]]
    by_address = {d.address: d for d in Delivery.objects.prefetch_related("events")}
    assert by_address["ok@client.test"].status == Delivery.Status.SENT
    unknown = by_address[UNKNOWN]
    assert (unknown.status, unknown.problem_code) == ("bounced", "delivery.hard_bounce")
    event = unknown.events.get(kind="bounced")
    assert (event.reply_code, event.status_code, event.source) == ("550", "5.1.1", "smtp")
    assert "User unknown" in event.diagnostic
    full = by_address[FULL]
    assert (full.status, full.problem_code) == ("soft_bounced", "delivery.soft_bounce")
    assert full.events.get(kind="soft_bounced").status_code == "4.2.2"
    policy = by_address[POLICY]
    assert (policy.status, policy.problem_code) == ("rejected", "delivery.rejected_policy")
    assert policy.events.get(kind="rejected").reply_code == "554"
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT
    page = staff_client.get(invoice.get_absolute_url()).content.decode()
    assert "says the address does not exist" in page
    assert "5.1.1" in page
    assert response.status_code == 200


def test_when_every_recipient_refuses_the_invoice_is_not_sent_and_says_so(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client_with(billing_firm, UNKNOWN, POLICY))
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.DRAFT
    assert invoice.sent_at is None
    page = staff_client.get(invoice.get_absolute_url()).content.decode()
    assert "No recipient accepted this invoice" in page


def test_a_client_without_any_address_gets_a_clear_error(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    client = _client_with(billing_firm)
    ContactAddressFactory(contact=client.contacts.get(), receives_invoices=False)
    invoice = invoice_with_lines(client=client)
    response = _send(staff_client, invoice, django_capture_on_commit_callbacks)
    assert "has no email address that receives invoices" in response.content.decode()
    assert not Delivery.objects.exists()
    assert smtp.received == []
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.DRAFT


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("anna smith@client.test", "send.invalid_recipient_chars"),
        ("anna@client.test\r\nBcc: victim@evil.test", "send.invalid_recipient_chars"),
        ("anna<x>@client.test", "send.invalid_recipient_chars"),
        ("anna@client", "delivery.not_sent_rejected_document"),
    ],
)
def test_an_invalid_address_is_not_sent_and_shown(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks, address, problem
):
    invoice = invoice_with_lines(client=_client_with(billing_firm, address, "ok@client.test"))
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    failed = Delivery.objects.get(address=address)
    assert (failed.status, failed.problem_code) == (Delivery.Status.FAILED, problem)
    assert [r.rcpt_tos for r in smtp.received] == [["ok@client.test"]]
    page = staff_client.get(invoice.get_absolute_url()).content.decode()
    assert "Not sent" in page


def test_header_injection_through_any_field_is_impossible(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    billing_firm.sender_name = "Alder\r\nBcc: victim@evil.test"
    billing_firm.reply_to_email = "billing@alder.test\r\nX-Evil: 1"
    billing_firm.save()
    client = _client_with(billing_firm, "ok@client.test", name="Birch\nBcc: victim@evil.test")
    invoice = invoice_with_lines(client=client, notes="Hello\r\nBcc: victim@evil.test\r\n\r\nX")
    _send(staff_client, invoice, django_capture_on_commit_callbacks)

    assert len(smtp.received) == 1
    received = smtp.received[0]
    assert received.rcpt_tos == ["ok@client.test"]
    headers = received.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\nBcc:" not in headers
    assert "X-Evil" not in headers
    message = received.message
    assert message["Bcc"] is None
    assert message["Reply-To"] is None
    assert "\n" not in message["Subject"]
    assert parseaddr(message["From"])[1] == "no-reply@portal.test"


def test_a_suppressed_address_is_skipped_and_shown(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    from invoicing.delivery.models import Suppression

    Suppression.objects.create(
        firm=billing_firm, normalized="gone@client.test", reason=Suppression.Reason.HARD_BOUNCE
    )
    invoice = invoice_with_lines(
        client=_client_with(billing_firm, "Gone@client.test", "ok@client.test")
    )
    response = _send(staff_client, invoice, django_capture_on_commit_callbacks)
    skipped = Delivery.objects.get(normalized="gone@client.test")
    assert (skipped.status, skipped.problem_code) == ("suppressed", "delivery.suppressed")
    assert [r.rcpt_tos for r in smtp.received] == [["ok@client.test"]]
    assert "Not sent to Gone@client.test" in response.content.decode()
    page = staff_client.get(invoice.get_absolute_url()).content.decode()
    assert "this address is blocked" in page


def test_a_test_to_myself_changes_nothing_about_the_invoice(
    staff_client, staff, billing_firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client_with(billing_firm, "ok@client.test"))
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:invoice_send_test", args=[invoice.pk]))
    received = smtp.for_recipient(staff.user.email)
    assert received.message["Subject"].startswith("[Test] Invoice #")
    assert "test copy" in received.message.get_body(("plain",)).get_content()
    delivery = Delivery.objects.get()
    assert delivery.is_test
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.DRAFT


def test_a_test_to_a_refusing_address_never_blocks_it(
    billing_firm, smtp, django_capture_on_commit_callbacks, staff_client, staff
):
    staff.user.email = UNKNOWN
    staff.user.save()
    invoice = invoice_with_lines(client=_client_with(billing_firm, "ok@client.test"))
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:invoice_send_test", args=[invoice.pk]))
    from invoicing.delivery.models import Suppression

    assert Delivery.objects.get().status == Delivery.Status.BOUNCED
    assert not Suppression.objects.exists()


def test_resend_to_a_corrected_address_lifts_the_old_problem(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    client = _client_with(billing_firm, UNKNOWN)
    invoice = invoice_with_lines(client=client)
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    bounced = Delivery.objects.get()
    assert bounced.problem_code == "delivery.hard_bounce"
    old_link = bounced.pay_link

    address = client.contacts.get().addresses.get()
    staff_client.post(
        reverse("portal:address_edit", args=[client.pk, address.pk]),
        {"address": "fixed@client.test", "receives_invoices": "on"},
    )
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:delivery_resend", args=[invoice.pk, bounced.pk]))

    assert smtp.received[-1].rcpt_tos == ["fixed@client.test"]
    bounced.refresh_from_db()
    old_link.refresh_from_db()
    assert bounced.problem_code == ""
    assert old_link.revoked_at is not None
    assert Delivery.objects.get(address="fixed@client.test").status == Delivery.Status.SENT
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


def test_sending_again_renews_the_link_and_revokes_the_old_one(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client_with(billing_firm, "ok@client.test"))
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    first, second = PayLink.objects.order_by("pk")
    assert first.revoked_at is not None
    assert second.revoked_at is None
    assert len(smtp.received) == 2


def test_an_unreachable_server_leaves_deliveries_queued_for_a_retry(
    staff_client, billing_firm, settings, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.EMAIL_PORT = sock.getsockname()[1]  # nothing listens here once closed
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    invoice = invoice_with_lines(client=_client_with(billing_firm, "ok@client.test"))
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(reverse("invoicing:invoice_send", args=[invoice.pk]))
    delivery = Delivery.objects.get()
    assert deliveries_send(delivery_ids=[delivery.pk]) == [delivery.pk]
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.QUEUED
    assert not PayLink.objects.exists()


def test_through_an_esp_the_message_id_is_kept_and_links_are_not_tracked(
    staff_client, billing_firm, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.BOUNCE_ADDRESS = ""
    invoice = invoice_with_lines(client=_client_with(billing_firm, "ok@client.test"))
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    (message,) = mail.outbox
    assert message.anymail_test_params["track_clicks"] is False
    assert delivery.status == Delivery.Status.SENT
    assert delivery.esp_message_id == "0"


def test_it_refuses_to_send_another_firms_invoice(outsider_client, billing_firm, smtp):
    invoice = invoice_with_lines(client=_client_with(billing_firm, "ok@client.test"))
    response = outsider_client.post(reverse("invoicing:invoice_send", args=[invoice.pk]))
    assert response.status_code == 404
    assert not Delivery.objects.exists()


assert smtplib  # the server fixture speaks real SMTP; smtplib is what Django uses to talk to it


def test_a_temporary_refusal_is_retried_until_the_address_is_blocked(
    staff_client, billing_firm, smtp, settings, django_capture_on_commit_callbacks
):
    # Tasks run inline here, so the retries (15 min, 1 h, 4 h later in real life) run at once.
    settings.DELIVERY_SOFT_RETRY_MINUTES = [15, 60, 240]
    invoice = invoice_with_lines(client=_client_with(billing_firm, FULL))
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    # Three soft bounces block the address (SUPPRESS_AFTER_SOFT_BOUNCES), so the last
    # retry is not sent and says why.
    attempts = list(Delivery.objects.filter(invoice=invoice).order_by("pk"))
    assert [d.status for d in attempts] == ["soft_bounced"] * 3 + ["suppressed"]
    assert attempts[-1].problem_code == "delivery.blocked_repeated_failures"


def test_a_soft_retry_is_skipped_once_something_newer_happened(
    staff_client, billing_firm, smtp, django_capture_on_commit_callbacks
):
    from invoicing.delivery.refusals import delivery_soft_retry

    invoice = invoice_with_lines(client=_client_with(billing_firm, FULL))
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    first = Delivery.objects.filter(invoice=invoice).order_by("pk").first()
    invoice.status = Invoice.Status.VOID
    invoice.save()
    assert delivery_soft_retry(delivery_id=first.pk) == []
