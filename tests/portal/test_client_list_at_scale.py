"""The client list sorts, searches and badges the shown page only."""

from __future__ import annotations

import datetime

from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.models import Delivery
from portal.models import Client
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.troubleshooting.test_problem_pages import _bounce, _delivery
from troubleshooting.selectors import _current_deliveries

LIST = reverse("portal:client_list")


def test_the_list_sorts_by_newest_first_when_asked(owner_client, firm):
    old = ClientFactory(firm=firm, display_name="Alpha Old")
    ClientFactory(firm=firm, display_name="Zeta New")
    Client.objects.filter(pk=old.pk).update(created=timezone.now() - datetime.timedelta(days=9))
    body = owner_client.get(LIST, {"sort": "-created"}).content.decode()
    assert body.index("Zeta New") < body.index("Alpha Old")


def test_the_list_sorts_by_name_descending_when_asked(owner_client, firm):
    ClientFactory(firm=firm, display_name="alpha bakery")
    ClientFactory(firm=firm, display_name="Beta Farm")
    body = owner_client.get(LIST, {"sort": "-name"}).content.decode()
    assert body.index("Beta Farm") < body.index("alpha bakery")


def test_an_unknown_sort_falls_back_to_the_name(owner_client, firm):
    ClientFactory(firm=firm, display_name="Zeta Farm")
    ClientFactory(firm=firm, display_name="Alpha Bakery")
    body = owner_client.get(LIST, {"sort": "drop table"}).content.decode()
    assert body.index("Alpha Bakery") < body.index("Zeta Farm")


def test_the_search_finds_a_client_by_a_contacts_name(owner_client, firm):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactFactory(client=client, name="Ingrid Halvorsen")
    ClientFactory(firm=firm, display_name="Cedar Farm")
    body = owner_client.get(LIST, {"q": "halvor"}).content.decode()
    assert "Birch Dental" in body
    assert "Cedar Farm" not in body


def test_a_search_too_short_for_the_trigram_index_still_finds_names(owner_client, firm):
    ClientFactory(firm=firm, display_name="Birch Dental")
    ClientFactory(firm=firm, display_name="Cedar Farm")
    body = owner_client.get(LIST, {"q": "bi"}).content.decode()
    assert "Birch Dental" in body
    assert "Cedar Farm" not in body


def test_the_search_finds_no_client_of_another_firm_by_its_contacts(owner_client, firm):
    other = ClientFactory(display_name="Other Firm's Birch")
    ContactAddressFactory(
        contact=ContactFactory(client=other, name="Ingrid Halvorsen"), address="ih@birch.test"
    )
    ClientFactory(firm=firm, display_name="Cedar Farm")
    for query in ("halvor", "birch", "ih@birch"):
        body = owner_client.get(LIST, {"q": query}).content.decode()
        assert "Other Firm" not in body
        assert "No client matches" in body


def test_a_client_with_several_matching_contacts_is_listed_once(owner_client, firm):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    for n in range(3):
        ContactAddressFactory(contact=ContactFactory(client=client), address=f"a{n}@birch.test")
    body = owner_client.get(LIST, {"q": "birch.test"}).content.decode()
    assert body.count(">Birch Dental</a>") == 1
    assert "1 client" in body


def test_the_pager_keeps_the_sort(owner_client, firm, settings):
    settings.CLIENTS_PER_PAGE = 2
    ClientFactory.create_batch(3, firm=firm)
    body = owner_client.get(LIST, {"sort": "-created"}).content.decode()
    assert "sort=-created&amp;page=2" in body


def test_badges_count_the_shown_clients_problems(owner_client, firm, settings):
    settings.CLIENTS_PER_PAGE = 1
    shown = ClientFactory(firm=firm, display_name="Alpha Bakery")
    _bounce(_delivery(shown, "anna@alpha.test"))
    _bounce(_delivery(shown, "bo@alpha.test"))
    hidden = ClientFactory(firm=firm, display_name="Zeta Farm")
    _bounce(_delivery(hidden, "kari@zeta.test"))
    body = owner_client.get(LIST).content.decode()
    assert "2 problems" in body
    assert "Zeta Farm" not in body


def test_a_later_page_shows_the_clients_that_follow_in_the_sort(owner_client, firm, settings):
    settings.CLIENTS_PER_PAGE = 2
    for name in ("delta", "Alpha", "echo", "Charlie", "bravo"):
        ClientFactory(firm=firm, display_name=name)
    ClientFactory(display_name="Another firm's Beta")
    body = owner_client.get(LIST, {"page": 2}).content.decode()
    assert body.index("Charlie") < body.index("delta")
    assert "bravo" not in body and "echo" not in body and "Beta" not in body


def test_a_later_page_of_a_search_shows_the_matches_that_follow(owner_client, firm, settings):
    settings.CLIENTS_PER_PAGE = 1
    ClientFactory(firm=firm, display_name="Birch Dental")
    ClientFactory(firm=firm, display_name="Cedar Farm")
    ContactFactory(client=ClientFactory(firm=firm, display_name="Aspen Ltd"), name="Ann Birch")
    body = owner_client.get(LIST, {"q": "birch", "page": 2}).content.decode()
    assert "Birch Dental" in body
    assert "Aspen Ltd" not in body and "Cedar Farm" not in body


def test_a_badge_counts_only_the_problems_the_dashboard_counts(owner_client, firm):
    client = ClientFactory(firm=firm, display_name="Alpha Bakery")
    _bounce(_delivery(client, "anna@alpha.test"))  # current: counted
    _bounce(_delivery(client, "test@alpha.test", is_test=True))
    _bounce(_delivery(client, "old@alpha.test"))
    _delivery(client, "old@alpha.test")  # a later send to it replaced the bounced one
    _bounce(_delivery(client, "gone@alpha.test", add_address=False))  # not the client's
    current = _current_deliveries(Delivery.objects.filter(client=client))

    body = owner_client.get(LIST).content.decode()

    assert current.count() == 1
    assert "1 problem" in body and "2 problems" not in body
