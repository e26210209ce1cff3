"""An invoice names who issues it and who it is for, and how to pay by transfer: the firm
sets its details in Billing settings, the client's are on the client."""

from __future__ import annotations

from decimal import Decimal
from html import unescape

import pytest
from django.urls import reverse

from invoicing.delivery.models import Delivery
from invoicing.delivery.sender import deliveries_send
from invoicing.delivery.simulator import SIMULATOR_DOMAIN, outcomes_held
from invoicing.models import FirmBillingSettings, Invoice
from invoicing.paylinks import pay_link_create
from invoicing.sending import invoice_send
from portal.models import OutboxEmail
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing.factories import InvoiceLineFactory, invoice_with_lines

BANK = "IBAN FI21 1234 5600 0007 85"


@pytest.fixture
def billing(firm):
    return FirmBillingSettings.objects.create(
        firm=firm,
        legal_name="Alder & Birch Accounting Oy",
        address="Aleksanterinkatu 1\n00100 Helsinki",
        tax_id="FI12345678",
        bank_details=f"Alder & Birch Accounting Oy\n{BANK}\nBIC NDEAFIHH",
    )


@pytest.fixture
def client_with_details(firm):
    client = ClientFactory(
        firm=firm, display_name="Birch Dental", billing_address="Kauppatori 2\nTurku"
    )
    client.tax_id = "FI87654321"
    client.save()
    return client


def _sent_link(client):
    address = ContactAddressFactory(contact=ContactFactory(client=client))
    invoice = invoice_with_lines(client=client, lines=0, status=Invoice.Status.SENT)
    InvoiceLineFactory(invoice=invoice, unit_price=Decimal("120.00"))
    delivery = Delivery.objects.create(
        firm=client.firm,
        invoice=invoice,
        client=client,
        address=address.address,
        normalized=address.normalized,
        status=Delivery.Status.SENT,
        verp_token=f"tok{invoice.pk:013d}",
    )
    return invoice, pay_link_create(delivery=delivery)


def _text(response) -> str:
    return unescape(response.content.decode())


def test_the_printable_invoice_names_both_parties_and_the_bank(
    owner_client, billing, client_with_details
):
    invoice, _token = _sent_link(client_with_details)
    body = _text(owner_client.get(reverse("invoicing:invoice_print", args=[invoice.pk])))
    for expected in (
        "Alder & Birch Accounting Oy",
        "Aleksanterinkatu 1",
        "FI12345678",
        "Birch Dental",
        "Kauppatori 2",
        "FI87654321",
        BANK,
    ):
        assert expected in body


def test_pay_now_shows_the_firm_and_its_bank_details_for_a_transfer(
    client, billing, client_with_details
):
    invoice, token = _sent_link(client_with_details)
    body = _text(client.get(reverse("invoicing:pay", args=[token])))
    assert "Alder & Birch Accounting Oy" in body
    assert "FI12345678" in body
    assert BANK in body
    assert f"Reference: invoice #{invoice.number}" in body
    assert "as agreed" not in body


def test_pay_now_without_bank_details_says_to_ask_the_firm(client, firm, client_with_details):
    _invoice, token = _sent_link(client_with_details)
    body = _text(client.get(reverse("invoicing:pay", args=[token])))
    assert "has not put its bank details here yet" in body


def test_the_owner_sets_the_details_in_billing_settings(owner_client, firm):
    response = owner_client.post(
        reverse("invoicing:billing_settings"),
        {
            "legal_name": "Alder & Birch Oy",
            "address": "Street 1",
            "tax_id": "FI1",
            "bank_details": BANK,
            "payment_instructions": "",
            "currency": "eur",
        },
    )
    assert response.status_code == 302
    saved = FirmBillingSettings.objects.get(firm=firm)
    assert (saved.legal_name, saved.tax_id, saved.bank_details) == ("Alder & Birch Oy", "FI1", BANK)


def test_the_client_form_takes_a_billing_address_and_vat_id(owner_client, firm):
    owner_client.post(
        reverse("portal:client_create"),
        {
            "display_name": "Cedar Ltd",
            "kind": "company",
            "status": "active",
            "language": "",
            "billing_address": "Road 3",
            "tax_id": "GB123",
        },
    )
    client = firm.clients.get(display_name="Cedar Ltd")
    assert (client.billing_address, client.tax_id) == ("Road 3", "GB123")


def test_the_email_carries_the_bank_details_and_the_firms_details(
    settings, firm, billing, client_with_details
):
    settings.EMAIL_BACKEND = "invoicing.delivery.simulator.SimulatorBackend"
    firm.reply_to_email = "billing@alder.test"
    firm.save()
    ContactAddressFactory(
        contact=ContactFactory(client=client_with_details), address=f"success@{SIMULATOR_DOMAIN}"
    )
    invoice = invoice_with_lines(client=client_with_details)
    deliveries = invoice_send(invoice=invoice)
    with outcomes_held():
        deliveries_send(delivery_ids=[d.pk for d in deliveries])
    raw = OutboxEmail.objects.get(recipients=f"success@{SIMULATOR_DOMAIN}").raw.decode()
    assert BANK in raw
    assert "FI12345678" in raw
    assert "Reply-To: billing@alder.test" in raw
    assert "Reply to this email" in raw


def test_without_a_reply_to_the_email_does_not_ask_for_a_reply(settings, firm, client_with_details):
    settings.EMAIL_BACKEND = "invoicing.delivery.simulator.SimulatorBackend"
    ContactAddressFactory(
        contact=ContactFactory(client=client_with_details), address=f"success@{SIMULATOR_DOMAIN}"
    )
    deliveries = invoice_send(invoice=invoice_with_lines(client=client_with_details))
    with outcomes_held():
        deliveries_send(delivery_ids=[d.pk for d in deliveries])
    raw = OutboxEmail.objects.get(recipients=f"success@{SIMULATOR_DOMAIN}").raw.decode()
    assert "Reply to this email" not in raw
    assert "Replies to this email are not read" in raw
