"""No field of a firm, client, member or invoice can add a header to any invoicing email.

Every email invoicing sends goes through the real SMTP server on loopback; each test puts a
line break and a forged header into one field that reaches a header and reads the raw
message the server received.
"""

from __future__ import annotations

from email.utils import getaddresses, parseaddr

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from invoicing.delivery.models import Delivery
from invoicing.models import Invoice
from invoicing.paylinks import pay_link_create
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, MembershipFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

pytestmark = pytest.mark.usefixtures("tasks_run_inline")

# Every way of breaking a line a mail library or an MTA might honour.
BREAKS = ["\r\n", "\n", "\r", "\r\n\t", "\u2028", "\x85"]
FORGED = "Bcc: victim@evil.test"


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = ""
    settings.DELIVERY_SOFT_RETRY_MINUTES = []


def _headers(received) -> str:
    return received.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")


def _assert_no_forged_header(received, *, recipients: list[str]) -> None:
    headers = _headers(received)
    # Only the original headers start a line; a forged one would start its own.
    assert "\nBcc:" not in headers and not headers.startswith("Bcc:")
    assert received.message["Bcc"] is None
    assert sorted(received.rcpt_tos) == sorted(recipients)
    for name in ("Subject", "From", "To", "Reply-To"):
        value = received.message[name]
        assert value is None or ("\n" not in str(value) and "\r" not in str(value))
    addresses = [a for _n, a in getaddresses(received.message.get_all("To", []))]
    assert "victim@evil.test" not in addresses


def _client(firm, *, name="Birch Dental", address="anna@client.test"):
    client = ClientFactory(firm=firm, display_name=name)
    ContactAddressFactory(contact=ContactFactory(client=client), address=address)
    return client


def _send(http, invoice, capture):
    with capture(execute=True):
        http.post(reverse("invoicing:invoice_send", args=[invoice.pk]))


@pytest.mark.parametrize("crlf", BREAKS)
def test_the_firms_sender_name(staff_client, firm, smtp, crlf, django_capture_on_commit_callbacks):
    firm.sender_name = f"Alder{crlf}{FORGED}"
    firm.save()
    _send(
        staff_client, invoice_with_lines(client=_client(firm)), django_capture_on_commit_callbacks
    )
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])
    assert parseaddr(received.message["From"])[1] == "no-reply@portal.test"


@pytest.mark.parametrize("crlf", BREAKS)
def test_the_firms_name_when_it_has_no_sender_name(
    staff_client, firm, smtp, crlf, django_capture_on_commit_callbacks
):
    firm.sender_name = ""
    firm.name = f"Alder{crlf}{FORGED}"
    firm.save()
    _send(
        staff_client, invoice_with_lines(client=_client(firm)), django_capture_on_commit_callbacks
    )
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])


@pytest.mark.parametrize("crlf", BREAKS)
def test_the_clients_name_in_the_subject(
    staff_client, firm, smtp, crlf, django_capture_on_commit_callbacks
):
    client = _client(firm, name=f"Birch{crlf}{FORGED}")
    _send(staff_client, invoice_with_lines(client=client), django_capture_on_commit_callbacks)
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])
    assert received.message["Subject"].startswith("Invoice #")


def test_the_firms_reply_to_address(staff_client, firm, smtp, django_capture_on_commit_callbacks):
    firm.reply_to_email = f"billing@alder.test\r\n{FORGED}"
    firm.save()
    _send(
        staff_client, invoice_with_lines(client=_client(firm)), django_capture_on_commit_callbacks
    )
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])
    assert received.message["Reply-To"] is None


@pytest.mark.parametrize("crlf", ["\r\n", "\n", "\r"])
def test_the_recipients_address_is_refused_not_sent(
    staff_client, firm, smtp, crlf, django_capture_on_commit_callbacks
):
    client = _client(firm, address=f"anna@client.test{crlf}{FORGED}")
    ContactAddressFactory(contact=client.contacts.get(), address="ok@client.test")
    _send(staff_client, invoice_with_lines(client=client), django_capture_on_commit_callbacks)
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["ok@client.test"])
    refused = Delivery.objects.exclude(address="ok@client.test").get()
    assert refused.status == Delivery.Status.FAILED


def test_the_invoice_number_and_notes_stay_in_the_body(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client(firm), notes=f"Thanks\r\n{FORGED}\r\n\r\nX")
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["anna@client.test"])
    assert received.message["Subject"].startswith(f"Invoice #{invoice.number} ")


def test_the_members_own_address_for_a_test_email(
    staff_client, staff, firm, smtp, django_capture_on_commit_callbacks
):
    staff.user.email = f"staff@alder.test\r\n{FORGED}"
    staff.user.save()
    invoice = invoice_with_lines(client=_client(firm))
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:invoice_send_test", args=[invoice.pk]))
    assert smtp.received == []
    assert Delivery.objects.get().status == Delivery.Status.FAILED


@pytest.mark.parametrize("crlf", BREAKS)
def test_the_clients_name_in_the_paid_notice(
    owner_client, owner, firm, smtp, crlf, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(
        client=_client(firm, name=f"Birch{crlf}{FORGED}"), status=Invoice.Status.SENT
    )
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(
            reverse("invoicing:payment_record", args=[invoice.pk]), {"amount": "200.00"}
        )
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["owner@alder.test"])


@pytest.mark.parametrize("crlf", BREAKS)
def test_the_clients_name_in_the_new_link_request(
    client, owner, firm, smtp, crlf, django_capture_on_commit_callbacks
):
    MembershipFactory(firm=firm, role=Role.ADMIN)  # told only if they wrote the invoice
    customer = _client(firm, name=f"Birch{crlf}{FORGED}")
    invoice = invoice_with_lines(client=customer, status=Invoice.Status.SENT)
    invoice.client_name = customer.display_name
    invoice.save()
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=customer,
        address="anna@client.test",
        normalized="anna@client.test",
        status=Delivery.Status.SENT,
        verp_token="inj-link",
    )
    token = pay_link_create(delivery=delivery)
    invoice.pay_links.update(revoked_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("invoicing:pay_link_request", args=[token]))
    (received,) = smtp.received
    _assert_no_forged_header(received, recipients=["owner@alder.test"])
