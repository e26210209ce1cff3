"""`Client.invoice_addresses`, the stored "how many of the client's addresses receive
invoices" that the Problems dashboard reads its no-recipient clients by, always equals what
the contacts' addresses say, whoever writes them (portal migration 0012's triggers)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.models import Client, Contact, ContactAddress
from tests.contact_writes import CLIENTS, PICK, STEPS, FirmRows, nth
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, FirmFactory

pytestmark = pytest.mark.django_db


def _stored(client: Client) -> int:
    return Client.objects.values_list("invoice_addresses", flat=True).get(pk=client.pk)


def _address(contact: Contact, n: int, *, receives: bool = True) -> ContactAddress:
    return ContactAddress(
        firm_id=contact.client.firm_id,
        contact=contact,
        address=f"p{n}@client.test",
        normalized=f"p{n}@client.test",
        receives_invoices=receives,
    )


def test_a_new_client_has_none():
    assert _stored(ClientFactory()) == 0


def test_adding_an_address_that_receives_invoices_counts_it():
    contact = ContactFactory()
    ContactAddressFactory(contact=contact)
    ContactAddressFactory(contact=contact)
    assert _stored(contact.client) == 2


def test_an_address_that_does_not_receive_invoices_is_not_counted():
    contact = ContactFactory()
    ContactAddressFactory(contact=contact, receives_invoices=False)
    assert _stored(contact.client) == 0


def test_unticking_receives_invoices_uncounts_the_address_and_ticking_counts_it():
    address = ContactAddressFactory()
    client = address.contact.client
    address.receives_invoices = False
    address.save()
    assert _stored(client) == 0
    address.receives_invoices = True
    address.save()
    assert _stored(client) == 1


def test_moving_a_contact_to_another_client_moves_its_addresses():
    address = ContactAddressFactory()
    contact, before = address.contact, address.contact.client
    after = ClientFactory(firm=before.firm)
    contact.client = after
    contact.save()
    assert (_stored(before), _stored(after)) == (0, 1)


def test_moving_an_address_to_another_clients_contact_moves_it():
    address = ContactAddressFactory()
    before = address.contact.client
    other = ContactFactory(client=ClientFactory(firm=before.firm))
    address.contact = other
    address.save()
    assert (_stored(before), _stored(other.client)) == (0, 1)


def test_deleting_an_address_uncounts_it():
    address = ContactAddressFactory()
    client = address.contact.client
    address.delete()
    assert _stored(client) == 0


def test_deleting_a_contact_uncounts_its_addresses():
    kept = ContactAddressFactory()
    client = kept.contact.client
    gone = ContactFactory(client=client)
    ContactAddressFactory(contact=gone)
    ContactAddressFactory(contact=gone)
    assert _stored(client) == 3
    gone.delete()
    assert _stored(client) == 1


def test_django_deletes_a_contacts_addresses_before_the_contact():
    """The foreign keys have no ON DELETE in the database: Django's collector deletes the
    addresses itself, before the contact, and their trigger recounts the client."""
    address = ContactAddressFactory()
    with CaptureQueriesContext(connection) as queries:
        address.contact.delete()
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert [sql.split('"')[1] for sql in deletes] == ["portal_contactaddress", "portal_contact"]


def test_a_contact_deleted_before_its_addresses_in_raw_sql_leaves_the_true_count():
    """Within a transaction the foreign key is only checked at commit, so a raw delete may
    take the contact first; the contact's own trigger recounts the client then."""
    contact = ContactFactory()
    ContactAddressFactory(contact=contact)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM portal_contact WHERE id = %s", [contact.pk])
        assert _stored(contact.client) == 0
        cursor.execute("DELETE FROM portal_contactaddress WHERE contact_id = %s", [contact.pk])
    assert _stored(contact.client) == 0


def test_bulk_create_counts_the_addresses():
    contact = ContactFactory()
    ContactAddress.objects.bulk_create(
        [_address(contact, 1), _address(contact, 2), _address(contact, 3, receives=False)]
    )
    assert _stored(contact.client) == 2


def test_queryset_update_of_receives_invoices_recounts():
    contact = ContactFactory()
    ContactAddressFactory(contact=contact)
    ContactAddressFactory(contact=contact)
    ContactAddress.objects.filter(contact=contact).update(receives_invoices=False)
    assert _stored(contact.client) == 0


def test_queryset_update_moving_contacts_recounts_both_clients():
    contact = ContactFactory()
    ContactAddressFactory(contact=contact)
    before = contact.client
    after = ClientFactory(firm=before.firm)
    Contact.objects.filter(pk=contact.pk).update(client=after)
    assert (_stored(before), _stored(after)) == (0, 1)


def test_a_stale_value_saved_from_python_is_replaced_by_the_count():
    """Model.save() writes every column: a client loaded before its address was added must
    not write its old 0 back."""
    client = ClientFactory()
    ContactAddressFactory(contact=ContactFactory(client=client))
    client.display_name = "Renamed"
    client.save()  # still holds invoice_addresses=0
    assert _stored(client) == 1
    Client.objects.filter(pk=client.pk).update(invoice_addresses=7)
    assert _stored(client) == 1


# --- the property: any mix of writes, then the stored count equals the addresses ---------


def _assert_stored_matches_the_addresses(firm) -> None:
    true_count = (
        ContactAddress.objects.filter(contact__client_id=OuterRef("pk"), receives_invoices=True)
        .order_by()
        .values("contact__client_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    for pk, stored, computed in (
        Client.objects.filter(firm=firm)
        .annotate(computed=Coalesce(Subquery(true_count), 0))
        .values_list("pk", "invoice_addresses", "computed")
    ):
        assert stored == computed, f"client {pk}: invoice_addresses={stored}, {computed} true"


STEP = st.one_of(
    st.tuples(st.just("add"), PICK, st.booleans()),  # (contact, receives invoices)
    st.tuples(st.just("add in bulk"), PICK, st.lists(st.booleans(), min_size=1, max_size=3)),
    st.tuples(st.just("tick"), PICK, st.booleans()),  # (address, receives invoices)
    st.tuples(st.just("tick all of a client"), CLIENTS, st.booleans()),
    st.tuples(st.just("save a stale client"), CLIENTS),
    *STEPS,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, min_size=1, max_size=10))
def test_invoice_addresses_equals_the_clients_addresses_that_receive_invoices(steps):
    firm = FirmFactory()
    clients = [ClientFactory(firm=firm) for _ in range(3)]
    stale = list(Client.objects.filter(pk__in=[c.pk for c in clients]).order_by("pk"))
    rows = FirmRows(
        clients,
        Contact.objects.filter(client__firm=firm),
        ContactAddress.objects.filter(firm=firm),
    )
    ContactFactory(client=clients[0])
    for serial, step in enumerate(steps):
        kind = step[0]
        if rows.apply(step):
            pass
        elif kind == "add":
            contact = nth(rows.contacts, step[1])
            if contact is not None:
                ContactAddressFactory(contact=contact, receives_invoices=step[2])
        elif kind == "add in bulk":
            contact = nth(rows.contacts, step[1])
            if contact is not None:
                ContactAddress.objects.bulk_create(
                    [
                        _address(contact, serial * 10 + i, receives=receives)
                        for i, receives in enumerate(step[2])
                    ]
                )
        elif kind == "tick":
            address = nth(rows.addresses, step[1])
            if address is not None:
                address.receives_invoices = step[2]
                address.save()
        elif kind == "tick all of a client":
            rows.addresses.filter(contact__client=clients[step[1]]).update(
                receives_invoices=step[2]
            )
        else:
            stale[step[1]].save()  # as loaded before every step: invoice_addresses=0
        _assert_stored_matches_the_addresses(firm)
