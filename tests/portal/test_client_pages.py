"""Client list and client detail, as a member sees them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import Client
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory


def test_it_lists_the_firms_active_clients_by_name(owner_client, firm):
    ClientFactory(firm=firm, display_name="Zeta Farm")
    ClientFactory(firm=firm, display_name="Alpha Bakery")
    ClientFactory(firm=firm, display_name="Old Co", status=Client.Status.ARCHIVED)
    response = owner_client.get(reverse("portal:client_list"))
    body = response.content.decode()
    assert body.index("Alpha Bakery") < body.index("Zeta Farm")
    assert "Old Co" not in body


def test_it_shows_archived_clients_when_asked(owner_client, firm):
    ClientFactory(firm=firm, display_name="Old Co", status=Client.Status.ARCHIVED)
    response = owner_client.get(reverse("portal:client_list"), {"show": "archived"})
    assert "Old Co" in response.content.decode()


def test_it_finds_a_client_by_a_contacts_email_address(owner_client, firm):
    client = ClientFactory(firm=firm, display_name="Hidden Name Ltd")
    ContactAddressFactory(contact=ContactFactory(client=client), address="ledger@hidden.test")
    ClientFactory(firm=firm, display_name="Unrelated Ltd")
    response = owner_client.get(reverse("portal:client_list"), {"q": "LEDGER@hidden"})
    body = response.content.decode()
    assert "Hidden Name Ltd" in body
    assert "Unrelated Ltd" not in body


def test_it_says_when_no_client_matches_the_search(owner_client, firm):
    response = owner_client.get(reverse("portal:client_list"), {"q": "nobody"})
    assert "No client matches" in response.content.decode()


def test_it_answers_htmx_searches_with_the_results_only(owner_client, firm):
    ClientFactory(firm=firm, display_name="Alpha Bakery")
    response = owner_client.get(
        reverse("portal:client_list"), {"q": "alpha"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert "Alpha Bakery" in body
    assert "<html" not in body


def test_it_pages_through_many_clients(owner_client, firm, settings):
    settings.CLIENTS_PER_PAGE = 10
    ClientFactory.create_batch(25, firm=firm)
    response = owner_client.get(reverse("portal:client_list"), {"page": 3})
    assert "Page 3 of 3" in response.content.decode()
    assert len(response.context["page"].object_list) == 5


@pytest.mark.parametrize("count", [3, 60])
def test_the_client_list_runs_the_same_queries_however_many_clients(
    owner_client, firm, count, django_assert_num_queries
):
    for client in ClientFactory.create_batch(count, firm=firm):
        ContactFactory.create_batch(2, client=client)
    # session, user, membership+firm, count for the pager, the page of clients, the
    # page's contact counts, the page's problem badges
    with django_assert_num_queries(7):
        owner_client.get(reverse("portal:client_list"))


@pytest.mark.parametrize("count", [4, 60])
@pytest.mark.parametrize(
    "params",
    [{"q": "bakery"}, {"q": "anna@"}, {"sort": "-created"}, {"sort": "name", "page": 2}],
    ids=["search by name", "search by address", "sorted", "sorted, page 2"],
)
def test_searching_sorting_and_paging_run_the_same_queries_however_many_clients(
    owner_client, firm, count, params, django_assert_num_queries, settings
):
    settings.CLIENTS_PER_PAGE = 2  # page 2 exists at either size
    for n in range(count):
        client = ClientFactory(firm=firm, display_name=f"Bakery {n:03d}")
        ContactAddressFactory(contact=ContactFactory(client=client), address=f"anna@b{n}.test")
    # as the plain list: session, user, membership+firm, count for the pager, the page of
    # clients, the page's contact counts, the page's problem badges
    with django_assert_num_queries(7):
        response = owner_client.get(reverse("portal:client_list"), params)
    assert len(response.context["page"].object_list) == 2


@pytest.mark.parametrize("count", [2, 30])
def test_the_contacts_tab_runs_the_same_queries_however_many_contacts(
    owner_client, firm, count, django_assert_num_queries
):
    client = ClientFactory(firm=firm)
    for contact in ContactFactory.create_batch(count, client=client):
        ContactAddressFactory.create_batch(2, contact=contact)
    # session, user, membership+firm, client, contacts, their addresses
    with django_assert_num_queries(6):
        owner_client.get(reverse("portal:client_detail", args=[client.pk]))


def test_a_new_client_is_created_in_the_members_firm(staff_client, firm):
    response = staff_client.post(
        reverse("portal:client_create"),
        {"display_name": "Birch Dental", "kind": "company", "status": "active"},
    )
    client = Client.objects.get(display_name="Birch Dental")
    assert client.firm == firm
    assert response["Location"] == client.get_absolute_url()


def test_a_client_without_a_name_is_refused_with_the_form_kept(staff_client):
    response = staff_client.post(
        reverse("portal:client_create"), {"display_name": "", "kind": "company", "status": "active"}
    )
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not Client.objects.exists()


def test_a_client_can_be_archived(owner_client, firm):
    client = ClientFactory(firm=firm)
    owner_client.post(
        reverse("portal:client_edit", args=[client.pk]),
        {"display_name": client.display_name, "kind": "company", "status": "archived"},
    )
    client.refresh_from_db()
    assert client.status == Client.Status.ARCHIVED


def test_a_signed_in_user_without_a_firm_is_told_so(db, client, django_user_model):
    user = django_user_model.objects.create_user(email="lonely@nowhere.test", password="x")
    client.force_login(user)
    response = client.get(reverse("portal:client_list"))
    assert response.status_code == 403
    assert "not a member of any firm" in response.content.decode()
