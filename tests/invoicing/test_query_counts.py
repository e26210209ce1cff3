"""Invoicing pages run the same number of queries with 2 or 50 recipients, events, invoices.

Each count is listed query by query, so a change that adds one says which.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.models import Invoice, Payment
from invoicing.paylinks import pay_link_create
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing.factories import invoice_with_lines

SIZES = [2, 50]
DAY = datetime.timedelta(days=1)


def _invoice_sent_to(firm, recipients: int, *, recorded_by=None) -> tuple[Invoice, str]:
    """An invoice sent twice to each of `recipients` addresses, each email with its events,
    some in trouble, with as many lines and part payments; returns it and a live token."""
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    contact = ContactFactory(client=client)
    invoice = invoice_with_lines(client=client, lines=recipients, status=Invoice.Status.SENT)
    token = ""
    for n in range(recipients):
        address = ContactAddressFactory(
            contact=contact, address=f"r{n}@client.test", is_primary=False
        )
        for attempt in range(2):
            delivery = Delivery.objects.create(
                firm=firm,
                invoice=invoice,
                client=client,
                address=address.address,
                normalized=address.normalized,
                status=Delivery.Status.BOUNCED if n % 2 else Delivery.Status.OPENED,
                problem_code="delivery.hard_bounce" if n % 2 else "",
                verp_token=f"v{invoice.pk}-{n}-{attempt}",
            )
            for kind in ("sent", "delivered", "opened"):
                DeliveryEvent.objects.create(delivery=delivery, kind=kind, source="webhook")
            token = pay_link_create(delivery=delivery)
    for _ in range(recipients):
        Payment.objects.create(
            invoice=invoice,
            provider="offline",
            amount=Decimal("1.00"),
            currency="EUR",
            recorded_by=recorded_by,
        )
    return invoice, token


@pytest.mark.parametrize("size", SIZES)
def test_the_invoice_page_with_its_timelines_runs_fixed_queries(
    owner_client, owner, firm, size, django_assert_num_queries
):
    invoice, _token = _invoice_sent_to(firm, size, recorded_by=owner.user)
    # session, user, membership with firm, the invoice with client and firm, its lines, the
    # client's addresses, the deliveries with their links, their events, the payments with
    # who recorded them (the sum paid is theirs)
    with django_assert_num_queries(9):
        response = owner_client.get(invoice.get_absolute_url())
    assert response.status_code == 200
    assert len(response.context["timelines"]) == size
    assert response.content.decode().count("Opened (approximate)") >= size


@pytest.mark.parametrize("size", SIZES)
def test_the_filtered_invoice_list_runs_fixed_queries(
    owner_client, firm, size, settings, django_assert_num_queries
):
    settings.INVOICES_PER_PAGE = 100
    today = timezone.localdate()
    for _ in range(size):
        client = ClientFactory(firm=firm)
        invoice_with_lines(
            client=client,
            lines=3,
            status=Invoice.Status.SENT,
            issue_date=today - 30 * DAY,
            due_date=today - DAY,
        )
        invoice_with_lines(client=client, lines=2, status=Invoice.Status.PAID)
    filters = {
        "status": "sent",
        "issued_from": (today - 60 * DAY).isoformat(),
        "issued_to": today.isoformat(),
        "overdue": "on",
    }
    # session, user, membership with firm, count for the pager (the client filter is a
    # search box: no list of clients),
    # the page of invoices with their clients, the lines of that page
    with django_assert_num_queries(6):
        response = owner_client.get(reverse("invoicing:invoice_list"), filters)
    assert len(response.context["page"].object_list) == size
    assert response.content.decode().count('class="badge overdue"') == size


@pytest.mark.parametrize("size", SIZES)
def test_a_clients_invoices_tab_runs_fixed_queries(
    owner_client, firm, size, django_assert_num_queries
):
    client = ClientFactory(firm=firm)
    for _ in range(size):
        invoice_with_lines(client=client, lines=2)
    # session, user, membership with firm, the client, its invoices, their lines
    with django_assert_num_queries(6):
        response = owner_client.get(reverse("invoicing:client_invoices", args=[client.pk]))
    assert response.status_code == 200


@pytest.mark.parametrize("size", SIZES)
def test_the_pay_now_page_runs_fixed_queries_first_and_later(firm, size, django_assert_num_queries):
    _invoice, token = _invoice_sent_to(firm, size)
    http = HttpClient()
    url = reverse("invoicing:pay", args=[token])
    # First visit: the link with invoice, firm, client and delivery; remember the visit;
    # mark the invoice viewed; the "clicked" event (savepoint, lock, insert, release, re-read;
    # the link's delivery bounced, so its state stays); the lines; the payment offer's
    # settings; the sum paid.
    with django_assert_num_queries(11):
        assert http.get(url).status_code == 200
    # Later visits: the link, the visit, the offer's settings, the lines, the sum paid.
    with django_assert_num_queries(5):
        assert http.get(url).status_code == 200


@pytest.mark.parametrize("size", SIZES)
def test_the_printable_invoice_runs_fixed_queries(
    owner_client, firm, size, django_assert_num_queries
):
    invoice, _token = _invoice_sent_to(firm, size)
    # session, user, membership with firm, the invoice, its lines, the billing settings
    with django_assert_num_queries(6):
        response = owner_client.get(reverse("invoicing:invoice_print", args=[invoice.pk]))
    assert response.status_code == 200


@pytest.mark.parametrize("size", SIZES)
def test_the_blocked_addresses_page_runs_fixed_queries(
    owner_client, owner, firm, size, django_assert_num_queries
):
    client = ClientFactory(firm=firm)
    invoice = invoice_with_lines(client=client, lines=1)
    for n in range(size):
        delivery = Delivery.objects.create(
            firm=firm,
            invoice=invoice,
            client=client,
            address=f"gone{n}@client.test",
            normalized=f"gone{n}@client.test",
            status=Delivery.Status.BOUNCED,
            verp_token=f"blocked-{n}",
        )
        event = DeliveryEvent.objects.create(
            delivery=delivery, kind="bounced", source="smtp", reply_code="550"
        )
        Suppression.objects.create(
            firm=firm,
            normalized=delivery.normalized,
            reason=Suppression.Reason.HARD_BOUNCE,
            source_event=event,
            removed_at=timezone.now() if n % 2 else None,
            removed_by=owner.user if n % 2 else None,
        )
    # session, user, membership with firm, the blocks with their events and who lifted them
    with django_assert_num_queries(4):
        response = owner_client.get(reverse("invoicing:suppressions"), {"show": "removed"})
    assert len(response.context["suppressions"]) == size
