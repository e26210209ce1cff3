"""The public Pay Now page and recording a payment."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.models import Role
from invoicing.models import Delivery, DeliveryEvent, FirmBillingSettings, Invoice, Payment
from invoicing.services import pay_link_create
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, MembershipFactory
from tests.invoicing import factories
from tests.invoicing.factories import InvoiceLineFactory, invoice_with_lines

tasks_run_inline = factories.tasks_run_inline


def _sent_invoice(firm, *, description="Annual accounts SECRET-LINE", **kwargs):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    address = ContactAddressFactory(contact=ContactFactory(client=client))
    invoice = invoice_with_lines(client=client, lines=0, status=Invoice.Status.SENT, **kwargs)
    InvoiceLineFactory(invoice=invoice, description=description, unit_price=Decimal("120.00"))
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address=address.address,
        normalized=address.normalized,
        status=Delivery.Status.SENT,
        verp_token=f"tok{invoice.pk:013d}",
    )
    return invoice, pay_link_create(delivery=delivery)


def _pay(http, token):
    return http.get(reverse("invoicing:pay", args=[token]))


def test_it_shows_the_one_invoice_and_how_to_pay(client, firm):
    FirmBillingSettings.objects.create(firm=firm, payment_instructions="IBAN FI00 1234")
    _invoice, token = _sent_invoice(firm)
    _sent_invoice(firm, description="Other client's line")
    response = _pay(client, token)
    body = response.content.decode()
    assert response.status_code == 200
    assert firm.name.replace("&", "&amp;") in body
    assert "Annual accounts SECRET-LINE" in body
    assert "120.00 EUR" in body
    assert "IBAN FI00 1234" in body
    assert "Other client&#x27;s line" not in body and "Other client's line" not in body
    assert response["Referrer-Policy"] == "no-referrer"


def test_opening_it_records_viewed_but_changes_no_payment(client, firm):
    invoice, token = _sent_invoice(firm)
    _pay(client, token)
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VIEWED
    assert invoice.pay_links.get().last_viewed_at is not None
    assert not Payment.objects.exists()
    _pay(client, token)  # a second visit records no second "clicked" event
    assert DeliveryEvent.objects.filter(kind="clicked").count() == 1


def test_a_wrong_token_is_not_found_and_names_no_firm(client, firm):
    _sent_invoice(firm)
    response = _pay(client, "x" * 43)
    assert response.status_code == 404
    assert "Alder" not in response.content.decode()


def test_a_revoked_link_asks_for_a_new_one(client, firm):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    response = _pay(client, token)
    assert response.status_code == 410
    body = response.content.decode()
    assert "no longer valid" in body
    assert "SECRET-LINE" not in body


def test_an_expired_link_asks_for_a_new_one(client, firm, settings):
    settings.PAY_LINK_DAYS = 60
    invoice, token = _sent_invoice(firm)
    with freeze_time(timezone.now() + datetime.timedelta(days=61)):
        response = _pay(client, token)
    assert response.status_code == 410
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


def test_a_void_invoices_link_no_longer_works(client, firm):
    invoice, token = _sent_invoice(firm)
    invoice.status = Invoice.Status.VOID
    invoice.save()
    assert _pay(client, token).status_code == 410


def test_the_page_refuses_to_change_anything_by_post(client, firm):
    _invoice, token = _sent_invoice(firm)
    response = client.post(reverse("invoicing:pay", args=[token]))
    assert response.status_code == 405


def test_the_token_is_stored_only_as_its_hash(firm):
    invoice, token = _sent_invoice(firm)
    link = invoice.pay_links.get()
    assert token not in link.token_hash
    assert len(token) >= 43  # 32 random bytes


def test_an_owner_records_a_payment_and_owners_are_told(
    owner_client, owner, firm, django_capture_on_commit_callbacks, tasks_run_inline
):
    MembershipFactory(firm=firm, role=Role.OWNER, user__email="second-owner@alder.test")
    invoice, token = _sent_invoice(firm)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(
            reverse("invoicing:payment_record", args=[invoice.pk]),
            {"amount": "120.00", "reference": "BANK-77"},
        )
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert invoice.paid_at is not None
    payment = Payment.objects.get()
    assert (payment.amount, payment.reference, payment.recorded_by) == (
        Decimal("120.00"),
        "BANK-77",
        owner.user,
    )
    (notice,) = mail.outbox
    assert sorted(notice.to) == ["owner@alder.test", "second-owner@alder.test"]
    assert f"Invoice #{invoice.number} for Birch Dental is paid" == notice.subject
    assert "This invoice is paid" in _pay(owner_client, token).content.decode()


def test_a_part_payment_leaves_the_invoice_open(owner_client, firm):
    invoice, _ = _sent_invoice(firm)
    owner_client.post(reverse("invoicing:payment_record", args=[invoice.pk]), {"amount": "20"})
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


def test_staff_cannot_record_payments(staff_client, firm):
    invoice, _ = _sent_invoice(firm)
    response = staff_client.post(
        reverse("invoicing:payment_record", args=[invoice.pk]), {"amount": "120"}
    )
    assert response.status_code == 403
    assert not Payment.objects.exists()


def test_owners_edit_the_payment_instructions(owner_client, firm):
    owner_client.post(
        reverse("invoicing:billing_settings"),
        {"payment_instructions": "Pay to IBAN X", "currency": "nok"},
    )
    settings = FirmBillingSettings.objects.get(firm=firm)
    assert (settings.payment_instructions, settings.currency) == ("Pay to IBAN X", "NOK")


@pytest.mark.parametrize("name", ["billing_settings"])
def test_staff_cannot_edit_billing_settings(staff_client, name):
    assert staff_client.get(reverse(f"invoicing:{name}")).status_code == 403
