"""The invoice list counts no further than anyone pages: past the cap it says "more than"."""

from __future__ import annotations

import datetime
from html import unescape

import pytest
from django.urls import reverse

from invoicing.models import Invoice
from portal.paging import CappedPaginator
from tests.factories import ClientFactory


def _invoices(firm, count):
    client = ClientFactory(firm=firm)
    Invoice.objects.bulk_create(
        Invoice(firm=firm, client=client, number=n + 1, due_date=datetime.date(2030, 1, 31))
        for n in range(count)
    )


@pytest.mark.django_db
def test_a_list_within_the_cap_is_counted_exactly(firm):
    _invoices(firm, 7)
    paginator = CappedPaginator(Invoice.objects.filter(firm=firm).order_by("pk"), 5, cap=10)
    assert (paginator.count, paginator.num_pages, paginator.capped) == (7, 2, False)


@pytest.mark.django_db
def test_a_list_past_the_cap_is_counted_to_the_cap(firm):
    _invoices(firm, 12)
    paginator = CappedPaginator(Invoice.objects.filter(firm=firm).order_by("pk"), 5, cap=10)
    assert (paginator.count, paginator.num_pages, paginator.capped) == (10, 2, True)


def test_the_invoice_list_says_more_than_when_it_stopped_counting(owner_client, firm, settings):
    settings.LIST_COUNT_CAP = 4
    settings.INVOICES_PER_PAGE = 2
    _invoices(firm, 9)
    page = unescape(owner_client.get(reverse("invoicing:invoice_list")).content.decode())
    assert "Page 1 of more than 2" in page


def test_the_invoice_list_gives_the_exact_page_count_below_the_cap(owner_client, firm, settings):
    settings.INVOICES_PER_PAGE = 2
    _invoices(firm, 5)
    page = unescape(owner_client.get(reverse("invoicing:invoice_list")).content.decode())
    assert "Page 1 of 3" in page
