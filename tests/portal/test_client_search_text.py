"""`Client.search_text`, what the client search matches (a client's name, its contacts'
names and addresses), always says what the rows say, whoever writes them (portal migration
0014's triggers), and the search finds through it what it found through the rows."""

from __future__ import annotations

import pytest
from django.db import transaction

from portal.models import Client, Contact, ContactAddress
from portal.selectors import clients_matching
from tests.db_locks import only_on_postgresql, second_meets_first
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, FirmFactory

pytestmark = pytest.mark.django_db


def _found(firm, query: str) -> list[str]:
    clients = clients_matching(Client.objects.filter(firm=firm), query=query)
    return sorted(clients.values_list("display_name", flat=True))


def _stored(client: Client) -> list[str]:
    return Client.objects.values_list("search_text", flat=True).get(pk=client.pk).split("\n")


def test_a_client_is_found_by_its_name_a_contacts_name_or_address_in_any_case():
    firm = FirmFactory()
    birch = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(
        contact=ContactFactory(client=birch, name="Ingrid Halvorsen"), address="ih@fjord.test"
    )
    ClientFactory(firm=firm, display_name="Cedar Farm")
    for query in ("birch", "DENTAL", "halvorsen", "iNGRID", "ih@fjord", "FJORD.TEST"):
        assert _found(firm, query) == ["Birch Dental"], query


def test_the_text_holds_the_name_then_the_contacts_then_their_addresses_in_capitals():
    client = ClientFactory(display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client, name="Ingrid"), address="i@b.test")
    assert _stored(client) == ["BIRCH DENTAL", "INGRID", "I@B.TEST"]


def test_a_new_client_without_contacts_is_found_by_its_name():
    firm = FirmFactory()
    ClientFactory(firm=firm, display_name="Cedar Farm")
    assert _found(firm, "cedar") == ["Cedar Farm"]


def test_a_renamed_client_is_found_by_its_new_name_only():
    client = ClientFactory(display_name="Birch Dental")
    client.display_name = "Aspen Dental"
    client.save(update_fields=["display_name"])
    assert (_found(client.firm, "aspen"), _found(client.firm, "birch")) == (["Aspen Dental"], [])


def test_a_renamed_contact_finds_its_client_by_the_new_name_only():
    contact = ContactFactory(name="Ingrid Halvorsen")
    Contact.objects.filter(pk=contact.pk).update(name="Ingrid Lund")
    firm = contact.client.firm
    assert (_found(firm, "lund"), _found(firm, "halvorsen")) == ([contact.client.display_name], [])


def test_a_contact_moved_to_another_client_takes_its_name_and_addresses_along():
    contact = ContactFactory(name="Ingrid Halvorsen")
    ContactAddressFactory(contact=contact, address="ih@fjord.test")
    before = contact.client
    after = ClientFactory(firm=before.firm, display_name="Aspen Dental")
    Contact.objects.filter(pk=contact.pk).update(client=after)
    assert _found(before.firm, "halvorsen") == _found(before.firm, "fjord") == ["Aspen Dental"]
    assert "INGRID HALVORSEN" not in _stored(before)


def test_a_changed_address_finds_its_client_by_the_new_address_only():
    address = ContactAddressFactory(address="old@fjord.test")
    address.address = address.normalized = "new@lake.test"
    address.save()
    firm = address.contact.client.firm
    assert (_found(firm, "lake.test"), _found(firm, "fjord")) == (
        [address.contact.client.display_name],
        [],
    )


def test_a_deleted_contact_no_longer_finds_its_client():
    contact = ContactFactory(name="Ingrid Halvorsen")
    ContactAddressFactory(contact=contact, address="ih@fjord.test")
    client = contact.client
    contact.delete()
    assert _stored(client) == [client.display_name.upper(), "", ""]


def test_addresses_made_in_bulk_find_their_client():
    contact = ContactFactory()
    ContactAddress.objects.bulk_create(
        [
            ContactAddress(
                firm_id=contact.client.firm_id,
                contact=contact,
                address=f"p{n}@bulk.test",
                normalized=f"p{n}@bulk.test",
            )
            for n in range(3)
        ]
    )
    assert _stored(contact.client)[2:] == ["P0@BULK.TEST", "P1@BULK.TEST", "P2@BULK.TEST"]


def test_a_stale_text_saved_from_python_is_replaced_by_the_true_one():
    """Model.save() writes every column: a client loaded before its contact was added must
    not write its old text back, nor can anything write another."""
    client = ClientFactory(display_name="Birch Dental")
    loaded = Client.objects.get(pk=client.pk)
    ContactFactory(client=client, name="Ingrid")
    loaded.tax_id = "FI123"
    loaded.save()
    assert _stored(client) == ["BIRCH DENTAL", "INGRID", ""]
    Client.objects.filter(pk=client.pk).update(search_text="anything")
    assert _stored(client) == ["BIRCH DENTAL", "INGRID", ""]


def test_percent_and_underscore_in_a_search_are_plain_characters():
    firm = FirmFactory()
    ClientFactory(firm=firm, display_name="100% Organic")
    ClientFactory(firm=firm, display_name="1000 Organic")
    ContactAddressFactory(
        contact=ContactFactory(client=ClientFactory(firm=firm, display_name="Lake")),
        address="a_b@lake.test",
    )
    ContactAddressFactory(
        contact=ContactFactory(client=ClientFactory(firm=firm, display_name="Pond")),
        address="axb@pond.test",
    )
    assert (_found(firm, "100%"), _found(firm, "a_b")) == (["100% Organic"], ["Lake"])


@only_on_postgresql("SQLite's upper() and LIKE fold ASCII letters only")
def test_letters_beyond_ascii_match_in_any_case():
    firm = FirmFactory()
    ClientFactory(firm=firm, display_name="Łukasz Żółw")
    ClientFactory(firm=firm, display_name="Åsa Öberg")
    assert _found(firm, "łukasz żółw") == _found(firm, "ŁUKASZ") == ["Łukasz Żółw"]
    assert _found(firm, "åsa ö") == ["Åsa Öberg"]


@pytest.mark.django_db(transaction=True)
@only_on_postgresql("real concurrent writers")
def test_two_transactions_adding_contacts_to_one_client_at_once_both_count():
    """The second writer's rebuild waits for the first one's lock on the client row, and
    then reads what the first committed: neither contact is lost from the text."""
    client = ClientFactory(display_name="Birch Dental")

    def lars() -> None:
        with transaction.atomic():
            ContactFactory(client=client, name="Lars")

    second_meets_first(lambda: ContactFactory(client=client, name="Ingrid"), lars)
    assert _stored(client) == ["BIRCH DENTAL", "INGRID", "LARS", ""]
