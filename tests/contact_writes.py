"""Writes to a firm's contacts and addresses, as Hypothesis steps, for the property tests of
the states the database keeps from them (`Client.invoice_addresses`,
`Delivery.address_kept`): each test adds its own kinds of step and applies these."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from hypothesis import strategies as st

from portal.models import Client, Contact, ContactAddress
from tests.factories import ContactFactory

CLIENTS = st.integers(0, 2)  # which of the test's three clients
PICK = st.integers(0, 100)  # which existing row, modulo how many there are

STEPS = [
    st.tuples(st.just("add contact"), CLIENTS),
    st.tuples(st.just("move contact"), PICK, CLIENTS),
    st.tuples(st.just("move contacts in bulk"), CLIENTS, CLIENTS),
    st.tuples(st.just("move address"), PICK, PICK),  # (address, to contact)
    st.tuples(st.just("delete address"), PICK),
    st.tuples(st.just("delete addresses of a client"), CLIENTS),
    st.tuples(st.just("delete contact"), PICK),
]


def nth(queryset: QuerySet, n: int):
    rows = list(queryset.order_by("pk"))
    return rows[n % len(rows)] if rows else None


@dataclass
class FirmRows:
    clients: list[Client]
    contacts: QuerySet[Contact]
    addresses: QuerySet[ContactAddress]

    def apply(self, step: tuple) -> bool:
        """Carry out one of STEPS; False for a step of another kind."""
        kind, contacts, addresses = step[0], self.contacts, self.addresses
        if kind == "add contact":
            ContactFactory(client=self.clients[step[1]])
        elif kind == "move contact":
            contact = nth(contacts, step[1])
            if contact is not None:
                contact.client = self.clients[step[2]]
                contact.save()
        elif kind == "move contacts in bulk":
            contacts.filter(client=self.clients[step[1]]).update(client=self.clients[step[2]])
        elif kind == "move address":
            address, contact = nth(addresses, step[1]), nth(contacts, step[2])
            if address is not None and contact is not None:
                clash = addresses.filter(contact=contact, normalized=address.normalized)
                if not clash.exclude(pk=address.pk).exists():
                    address.contact = contact
                    address.save()
        elif kind == "delete address":
            address = nth(addresses, step[1])
            if address is not None:
                address.delete()
        elif kind == "delete addresses of a client":
            addresses.filter(contact__client=self.clients[step[1]]).delete()
        elif kind == "delete contact":
            contact = nth(contacts, step[1])
            if contact is not None:
                contact.delete()
        else:
            return False
        return True
