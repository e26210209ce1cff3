"""`Delivery.address_kept`, "the client still has this address", always says what the
contacts' addresses say, whoever writes them (invoicing migration 0009's triggers): a
problem of an address the client no longer has is not current."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoicing.delivery.models import Delivery
from portal.models import Client, Contact, ContactAddress
from tests.contact_writes import CLIENTS, PICK, STEPS, FirmRows, nth
from tests.db_locks import only_on_postgresql, second_meets_first
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, FirmFactory
from tests.troubleshooting.test_problem_pages import _delivery

pytestmark = pytest.mark.django_db


def _send(client: Client, address: str) -> Delivery:
    """A delivery to `address` as written when an invoice goes out (the address need not be
    the client's: a test to myself, or an address since removed)."""
    return _delivery(client, address, add_address=False)


def _kept(delivery: Delivery) -> bool:
    return Delivery.objects.values_list("address_kept", flat=True).get(pk=delivery.pk)


def _on(client: Client, address: str) -> ContactAddress:
    return ContactAddressFactory(contact=ContactFactory(client=client), address=address)


def test_a_delivery_to_one_of_the_clients_addresses_is_kept():
    client = ClientFactory()
    _on(client, "anna@birch.test")
    assert _kept(_send(client, "Anna@Birch.test"))


def test_a_delivery_to_an_address_the_client_does_not_have_is_not_kept():
    assert not _kept(_send(ClientFactory(), "someone@else.test"))


def test_the_same_address_on_another_client_does_not_keep_it():
    client = ClientFactory()
    _on(ClientFactory(firm=client.firm), "anna@birch.test")
    assert not _kept(_send(client, "anna@birch.test"))


def test_deleting_the_address_unkeeps_its_deliveries_and_adding_it_back_keeps_them():
    client = ClientFactory()
    address = _on(client, "anna@birch.test")
    delivery = _send(client, "anna@birch.test")
    address.delete()
    assert not _kept(delivery)
    _on(client, "anna@birch.test")
    assert _kept(delivery)


def test_another_contact_with_the_same_address_keeps_it_when_one_goes():
    client = ClientFactory()
    first = _on(client, "anna@birch.test")
    _on(client, "anna@birch.test")
    delivery = _send(client, "anna@birch.test")
    first.delete()
    assert _kept(delivery)


def test_correcting_an_address_unkeeps_the_old_ones_deliveries():
    client = ClientFactory()
    address = _on(client, "anna@brich.test")
    old = _send(client, "anna@brich.test")
    earlier = _send(client, "anna@birch.test")  # sent to the right one by hand, once
    address.address = address.normalized = "anna@birch.test"
    address.save()
    assert (_kept(old), _kept(earlier)) == (False, True)


def test_a_contact_moved_to_another_client_takes_its_addresses_along():
    before = ClientFactory()
    after = ClientFactory(firm=before.firm)
    address = _on(before, "anna@birch.test")
    on_before, on_after = _send(before, "anna@birch.test"), _send(after, "anna@birch.test")
    Contact.objects.filter(pk=address.contact_id).update(client=after)
    assert (_kept(on_before), _kept(on_after)) == (False, True)


def test_an_address_moved_to_another_clients_contact_goes_with_it():
    before = ClientFactory()
    after = ClientFactory(firm=before.firm)
    address = _on(before, "anna@birch.test")
    on_before, on_after = _send(before, "anna@birch.test"), _send(after, "anna@birch.test")
    address.contact = ContactFactory(client=after)
    address.save()
    assert (_kept(on_before), _kept(on_after)) == (False, True)


def test_a_contact_deleted_before_its_addresses_in_raw_sql_unkeeps_them():
    """Within a transaction the foreign key is only checked at commit, so a raw delete may
    take the contact first; the contact's own trigger answers then."""
    client = ClientFactory()
    address = _on(client, "anna@birch.test")
    delivery = _send(client, "anna@birch.test")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM portal_contact WHERE id = %s", [address.contact_id])
        assert not _kept(delivery)
        cursor.execute("DELETE FROM portal_contactaddress WHERE id = %s", [address.pk])
    assert not _kept(delivery)


def test_addresses_made_in_bulk_keep_their_deliveries():
    client = ClientFactory()
    delivery = _send(client, "p1@bulk.test")
    contact = ContactFactory(client=client)
    ContactAddress.objects.bulk_create(
        [
            ContactAddress(firm_id=client.firm_id, contact=contact, address=a, normalized=a)
            for a in ("p0@bulk.test", "p1@bulk.test")
        ]
    )
    assert _kept(delivery)


def test_a_delivery_moved_to_another_client_is_answered_again():
    client = ClientFactory()
    _on(client, "anna@birch.test")
    delivery = _send(ClientFactory(firm=client.firm), "anna@birch.test")
    Delivery.objects.filter(pk=delivery.pk).update(client=client)
    assert _kept(delivery)


def test_a_value_written_from_python_is_replaced_by_the_answer():
    client = ClientFactory()
    _on(client, "anna@birch.test")
    delivery = _send(client, "anna@birch.test")
    Delivery.objects.filter(pk=delivery.pk).update(address_kept=False)
    assert _kept(delivery)


@pytest.mark.django_db(transaction=True)
@only_on_postgresql("real concurrent writers")
def test_a_delivery_written_while_its_address_is_deleted_waits_and_is_not_kept():
    """The sender read the address before it was deleted; its delivery's trigger finds the
    address row locked by the deletion, waits for it to commit, then finds it gone."""
    client = ClientFactory()
    address = _on(client, "anna@birch.test")

    def sending() -> Delivery:
        with transaction.atomic():
            return _send(client, "anna@birch.test")

    _deleted, written = second_meets_first(
        lambda: ContactAddress.objects.filter(pk=address.pk).delete(), sending
    )
    assert not _kept(written)


# --- the property: any mix of writes, then every delivery's flag says the truth -----------


def _assert_every_flag_is_true(firm) -> None:
    on_client = ContactAddress.objects.filter(
        firm_id=OuterRef("firm_id"),
        contact__client_id=OuterRef("client_id"),
        normalized=OuterRef("normalized"),
    )
    for pk, stored, truth in (
        Delivery.objects.filter(firm=firm)
        .annotate(truth=Exists(on_client))
        .values_list("pk", "address_kept", "truth")
    ):
        assert stored == truth, f"delivery {pk}: address_kept={stored}, truth {truth}"


ADDRESSES = st.sampled_from(["a@x.test", "b@x.test", "c@y.test"])

STEP = st.one_of(
    st.tuples(st.just("add address"), PICK, ADDRESSES),
    st.tuples(st.just("send"), CLIENTS, ADDRESSES),
    st.tuples(st.just("change address"), PICK, ADDRESSES),
    *STEPS,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, min_size=1, max_size=10))
def test_address_kept_always_says_whether_the_client_has_the_address(steps):
    firm = FirmFactory()
    clients = [ClientFactory(firm=firm) for _ in range(3)]
    rows = FirmRows(
        clients,
        Contact.objects.filter(client__firm=firm),
        ContactAddress.objects.filter(firm=firm),
    )
    ContactFactory(client=clients[0])
    for step in steps:
        kind = step[0]
        if rows.apply(step):
            pass
        elif kind == "add address":
            contact = nth(rows.contacts, step[1])
            if (
                contact is not None
                and not rows.addresses.filter(contact=contact, normalized=step[2]).exists()
            ):
                ContactAddressFactory(contact=contact, address=step[2])
        elif kind == "send":
            _send(clients[step[1]], step[2])
        else:  # change address
            address = nth(rows.addresses, step[1])
            if (
                address is not None
                and not rows.addresses.filter(contact=address.contact, normalized=step[2]).exists()
            ):
                address.address = address.normalized = step[2]
                address.save()
        _assert_every_flag_is_true(firm)
