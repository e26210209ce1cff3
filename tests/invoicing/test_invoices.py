"""Invoices as a member sees them: create, number, edit, list, print, void."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from invoicing import invoices
from invoicing.invoices import LineData, invoice_create
from invoicing.models import Invoice
from tests.factories import ClientFactory
from tests.invoicing.factories import InvoiceFactory, InvoiceLineFactory, invoice_with_lines


def _form(client, **extra):
    data = {
        "client": client.pk,
        "currency": "eur",
        "issue_date": "2025-03-01",
        "due_date": "2025-03-15",
        "notes": "Thank you",
        "lines-TOTAL_FORMS": "3",
        "lines-INITIAL_FORMS": "0",
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
        "lines-0-description": "Annual accounts",
        "lines-0-quantity": "1",
        "lines-0-unit_price": "450.00",
        "lines-1-description": "Payroll",
        "lines-1-quantity": "3",
        "lines-1-unit_price": "33.33",
    }
    data.update(extra)
    return data


def test_it_creates_a_draft_with_lines_and_decimal_money(staff_client, firm):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    response = staff_client.post(reverse("invoicing:invoice_create"), _form(client))
    invoice = Invoice.objects.get()
    assert response["Location"] == invoice.get_absolute_url()
    assert invoice.firm == firm
    assert invoice.status == Invoice.Status.DRAFT
    assert invoice.currency == "EUR"
    assert invoice.client_name == "Birch Dental"
    assert [line.description for line in invoice.lines.all()] == ["Annual accounts", "Payroll"]
    assert invoice.total == Decimal("549.99")


def test_it_refuses_an_invoice_without_lines_and_keeps_the_form(staff_client, firm):
    client = ClientFactory(firm=firm)
    data = _form(client)
    for key in list(data):
        if key.startswith(("lines-0-", "lines-1-")):
            data[key] = ""
    response = staff_client.post(reverse("invoicing:invoice_create"), data)
    assert response.status_code == 400
    assert "An invoice needs at least one line" in response.content.decode()
    assert not Invoice.objects.exists()


def test_it_refuses_another_firms_client(staff_client, firm, outsider):
    foreign = ClientFactory(firm=outsider.firm)
    response = staff_client.post(reverse("invoicing:invoice_create"), _form(foreign))
    assert response.status_code == 400
    assert not Invoice.objects.exists()


def test_numbers_count_up_per_firm(firm, outsider):
    client = ClientFactory(firm=firm)
    other = ClientFactory(firm=outsider.firm)
    line = [LineData("Work", Decimal(1), Decimal(10))]
    due = datetime.date(2025, 1, 31)
    numbers = [
        invoice_create(firm=firm, client=client, created_by=None, due_date=due, lines=line).number
        for _ in range(3)
    ]
    theirs = invoice_create(
        firm=outsider.firm, client=other, created_by=None, due_date=due, lines=line
    )
    assert numbers == [1, 2, 3]
    assert theirs.number == 1


def test_a_number_taken_meanwhile_is_retried(firm, monkeypatch):
    """Two members saving at once: the unique constraint catches it and the next number wins."""
    client = ClientFactory(firm=firm)
    InvoiceFactory(client=client, number=1)
    real = invoices._next_number
    answers = iter([1])  # a stale read, as a concurrent request would see it
    monkeypatch.setattr(invoices, "_next_number", lambda f: next(answers, None) or real(f))
    invoice = invoice_create(
        firm=firm,
        client=client,
        created_by=None,
        due_date=datetime.date(2025, 1, 31),
        lines=[LineData("Work", Decimal(1), Decimal(10))],
    )
    assert invoice.number == 2


def test_a_draft_can_be_edited(staff_client, firm):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm))
    data = _form(invoice.client, **{"lines-0-description": "Corrected"})
    staff_client.post(reverse("invoicing:invoice_edit", args=[invoice.pk]), data)
    assert invoice.lines.first().description == "Corrected"
    assert invoice.lines.count() == 2


def test_a_sent_invoice_cannot_be_edited(staff_client, firm):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm), status=Invoice.Status.SENT)
    before = list(invoice.lines.values_list("description", flat=True))
    response = staff_client.post(
        reverse("invoicing:invoice_edit", args=[invoice.pk]), _form(invoice.client), follow=True
    )
    assert "Only a draft can be edited" in response.content.decode()
    assert list(invoice.lines.values_list("description", flat=True)) == before


def test_a_sent_invoice_is_voided_not_deleted(staff_client, firm):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm), status=Invoice.Status.SENT)
    staff_client.post(reverse("invoicing:invoice_void", args=[invoice.pk]))
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID
    response = staff_client.get(reverse("invoicing:invoice_print", args=[invoice.pk]))
    assert "VOID" in response.content.decode()


def test_the_list_filters_by_status_and_client(owner_client, firm):
    alpha = ClientFactory(firm=firm, display_name="Alpha Bakery")
    zeta = ClientFactory(firm=firm, display_name="Zeta Farm")
    InvoiceFactory(client=alpha, number=101, status=Invoice.Status.SENT)
    InvoiceFactory(client=alpha, number=102)
    InvoiceFactory(client=zeta, number=103, status=Invoice.Status.SENT)
    url = reverse("invoicing:invoice_list")
    body = owner_client.get(url, {"status": "sent", "client": alpha.pk}).content.decode()
    assert "#101" in body
    assert "#102" not in body
    assert "#103" not in body


def test_the_list_shows_totals_computed_like_the_invoice(owner_client, firm):
    invoice = InvoiceFactory(client=ClientFactory(firm=firm))
    InvoiceLineFactory(invoice=invoice, quantity=Decimal("3"), unit_price=Decimal("33.33"))
    InvoiceLineFactory(invoice=invoice, quantity=Decimal("0.5"), unit_price=Decimal("0.05"))
    body = owner_client.get(reverse("invoicing:invoice_list")).content.decode()
    assert f"{invoice.total} EUR" in body


def test_the_list_shows_an_invoice_without_lines_as_zero(owner_client, firm):
    InvoiceFactory(client=ClientFactory(firm=firm), number=41)
    body = owner_client.get(reverse("invoicing:invoice_list")).content.decode()
    assert "0.00 EUR" in body


def test_the_clients_tab_shows_each_invoices_own_total(owner_client, firm):
    client = ClientFactory(firm=firm)
    first, second = InvoiceFactory(client=client), InvoiceFactory(client=client)
    InvoiceLineFactory(invoice=first, quantity=Decimal("3"), unit_price=Decimal("33.33"))
    InvoiceLineFactory(invoice=first, quantity=Decimal("0.5"), unit_price=Decimal("0.05"))
    InvoiceLineFactory(invoice=second, quantity=Decimal("1"), unit_price=Decimal("7.50"))
    url = reverse("invoicing:client_invoices", args=[client.pk])
    body = owner_client.get(url).content.decode()
    assert "100.02 EUR" in body  # 99.99 and 0.025 rounded up
    assert "7.50 EUR" in body


@pytest.mark.parametrize("count", [3, 60])
def test_the_list_runs_the_same_queries_however_many_invoices(
    owner_client, firm, count, django_assert_num_queries
):
    for client in ClientFactory.create_batch(3, firm=firm):
        for _ in range(count // 3):
            invoice_with_lines(client=client, lines=2)
    # session, user, membership+firm, count for the pager, the page of invoices with their
    # clients, the totals of that page (the client filter is a search box: no client list)
    with django_assert_num_queries(6):
        response = owner_client.get(reverse("invoicing:invoice_list"))
    assert response.status_code == 200


def test_the_clients_invoices_tab_lists_only_that_clients_invoices(owner_client, firm):
    client = ClientFactory(firm=firm)
    InvoiceFactory(client=client, number=7)
    InvoiceFactory(client=ClientFactory(firm=firm), number=8)
    body = owner_client.get(reverse("invoicing:client_invoices", args=[client.pk])).content
    assert b"#7" in body
    assert b"#8" not in body


def test_a_client_without_invoices_is_told_so(owner_client, firm):
    client = ClientFactory(firm=firm)
    InvoiceFactory(client=ClientFactory(firm=firm), number=8)
    body = owner_client.get(reverse("invoicing:client_invoices", args=[client.pk])).content
    assert b"This client has no invoices yet." in body
    assert b"#8" not in body


def test_a_filter_that_matches_nothing_says_so(owner_client, firm):
    InvoiceFactory(client=ClientFactory(firm=firm), number=8, status="draft")
    body = owner_client.get(reverse("invoicing:invoice_list"), {"status": "paid"}).content
    assert b"No invoices match." in body
    assert b"#8" not in body


def test_the_printable_view_is_clean(owner_client, firm):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm, display_name="Birch Dental"))
    body = owner_client.get(reverse("invoicing:invoice_print", args=[invoice.pk])).content.decode()
    assert "Birch Dental" in body
    assert "invoicing/invoice.css" in body
    assert 'class="mainnav"' not in body


def test_another_firms_invoice_is_not_found(outsider_client, firm):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm))
    for name in ("invoice_detail", "invoice_print", "invoice_edit"):
        response = outsider_client.get(reverse(f"invoicing:{name}", args=[invoice.pk]))
        assert response.status_code == 404
