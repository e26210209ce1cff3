"""portal.paging: KeysFirst and its paginator read a page's keys first, then its rows."""

from __future__ import annotations

import pytest
from django.core.paginator import Paginator
from django.db.models.functions import Lower

from portal.models import Client
from portal.paging import KeysFirst
from tests.factories import ClientFactory


def test_each_page_holds_the_rows_the_plain_query_pages_to(firm):
    for name in ("delta", "Alpha", "echo", "Charlie", "bravo", "alpha"):
        ClientFactory(firm=firm, display_name=name)
    ordered = Client.objects.filter(firm=firm).order_by(Lower("display_name"), "pk")
    plain, keys_first = Paginator(ordered, 4), Paginator(KeysFirst(ordered), 4)
    assert keys_first.count == plain.count == 6
    for number in plain.page_range:
        assert list(keys_first.page(number)) == list(plain.page(number))


def test_a_page_is_two_queries_however_far_into_the_list(firm, django_assert_num_queries):
    for n in range(30):
        ClientFactory(firm=firm, display_name=f"Client {n:02}")
    paginator = Paginator(KeysFirst(Client.objects.filter(firm=firm).order_by("pk")), 5)
    with django_assert_num_queries(2):  # the count, then the page (its keys a subquery)
        assert len(paginator.page(6)) == 5


def test_an_unordered_queryset_is_refused(firm):
    with pytest.raises(ValueError, match="order_by"):
        KeysFirst(Client.objects.filter(firm=firm))


def test_a_queryset_that_reads_more_than_plain_rows_is_refused(firm):
    # Its later pages would come without what its first page has.
    with pytest.raises(ValueError, match="plain rows"):
        KeysFirst(Client.objects.filter(firm=firm).select_related("firm").order_by("pk"))
