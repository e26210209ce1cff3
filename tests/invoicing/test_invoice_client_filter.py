"""The invoice list's client filter is a search box, not a list of every client."""

from __future__ import annotations

import pytest
from django.urls import reverse

from invoicing.models import Invoice
from portal.models import Client
from tests.factories import ClientFactory
from tests.invoicing.factories import InvoiceFactory

LIST = reverse("invoicing:invoice_list")


def test_the_filter_lists_no_client_until_searched(owner_client, firm):
    ClientFactory(firm=firm, display_name="Birch Dental")
    body = owner_client.get(LIST).content.decode()
    assert "Birch Dental" not in body
    assert 'name="client_q"' in body


def test_searching_offers_matching_clients_as_filter_links(owner_client, firm):
    birch = ClientFactory(firm=firm, display_name="Birch Dental")
    ClientFactory(firm=firm, display_name="Cedar Farm")
    response = owner_client.get(
        LIST, {"client_q": "birch", "status": "sent"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert "Birch Dental" in body
    assert "Cedar Farm" not in body
    assert f"?client={birch.pk}&amp;status=sent" in body


def test_another_firms_client_is_never_offered(owner_client, firm, outsider):
    ClientFactory(firm=outsider.firm, display_name="Birch Dental")
    response = owner_client.get(LIST, {"client_q": "birch"}, headers={"HX-Request": "true"})
    assert "Birch Dental" not in response.content.decode()


def test_a_chosen_client_filters_the_list_and_is_named(owner_client, firm):
    birch = ClientFactory(firm=firm, display_name="Birch Dental")
    cedar = ClientFactory(firm=firm, display_name="Cedar Farm")
    InvoiceFactory(client=birch, number=1, status=Invoice.Status.SENT)
    InvoiceFactory(client=cedar, number=2, status=Invoice.Status.SENT)
    body = owner_client.get(LIST, {"client": birch.pk}).content.decode()
    assert "Birch Dental" in body
    assert "#2" not in body
    assert f'name="client" value="{birch.pk}"' in body


@pytest.mark.parametrize("clients", [3, 300])
def test_the_list_runs_the_same_queries_however_many_clients(
    owner_client, firm, clients, django_assert_num_queries
):
    Client.objects.bulk_create(Client(firm=firm, display_name=f"C{n}") for n in range(clients))
    chosen = Client.objects.filter(firm=firm).first()
    InvoiceFactory(client=chosen, number=1)
    # session, user, membership+firm, the chosen client, count, the page, its lines
    with django_assert_num_queries(7):
        owner_client.get(LIST, {"client": chosen.pk})
