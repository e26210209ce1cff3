"""Contacts and their addresses: several per contact, pasted lists, clear errors."""

from __future__ import annotations

from django.urls import reverse

from portal.models import Contact, ContactAddress
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory


def _client(firm):
    return ClientFactory(firm=firm, display_name="Alder Farm")


def test_a_contact_is_created_with_every_pasted_address(staff_client, firm):
    client = _client(firm)
    staff_client.post(
        reverse("portal:contact_create", args=[client.pk]),
        {
            "name": "Kari Nordmann",
            "addresses": "kari@alder.test; Billing@Alder.TEST,\nk2@alder.test",
        },
    )
    contact = Contact.objects.get(client=client)
    assert sorted(contact.addresses.values_list("address", flat=True)) == [
        "Billing@alder.test",
        "k2@alder.test",
        "kari@alder.test",
    ]
    assert contact.addresses.get(is_primary=True).address == "kari@alder.test"


def test_a_bad_address_is_explained_and_nothing_typed_is_lost(staff_client, firm):
    client = _client(firm)
    response = staff_client.post(
        reverse("portal:contact_create", args=[client.pk]),
        {"name": "Kari Nordmann", "addresses": "kari@alder.test; ola<@alder.test"},
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "character &lt; at position 4" in body
    assert "kari@alder.test; ola&lt;@alder.test" in body
    assert "Kari Nordmann" in body
    assert not Contact.objects.exists()


def test_a_likely_typo_needs_confirmation(staff_client, firm):
    client = _client(firm)
    url = reverse("portal:contact_create", args=[client.pk])
    response = staff_client.post(url, {"name": "Kari", "addresses": "kari@gmial.com"})
    assert "Did you mean kari@gmail.com" in response.content.decode()
    assert not Contact.objects.exists()
    staff_client.post(url, {"name": "Kari", "addresses": "kari@gmial.com", "keep_as_typed": "on"})
    assert ContactAddress.objects.get().address == "kari@gmial.com"


def test_more_addresses_can_be_added_to_a_contact(staff_client, firm):
    contact = ContactFactory(client=_client(firm))
    ContactAddressFactory(contact=contact, address="first@alder.test")
    staff_client.post(
        reverse("portal:contact_addresses_add", args=[contact.client.pk, contact.pk]),
        {"addresses": "second@alder.test; FIRST@alder.test"},
    )
    assert sorted(contact.addresses.values_list("address", flat=True)) == [
        "first@alder.test",
        "second@alder.test",
    ]


def test_an_address_can_be_corrected(staff_client, firm):
    contact = ContactFactory(client=_client(firm))
    address = ContactAddressFactory(contact=contact, address="kari@alder.tset")
    staff_client.post(
        reverse("portal:address_edit", args=[contact.client.pk, address.pk]),
        {"address": " kari@alder.test ", "is_primary": "on", "receives_invoices": "on"},
    )
    address.refresh_from_db()
    assert address.address == "kari@alder.test"
    assert address.normalized == "kari@alder.test"


def test_an_address_with_an_invisible_character_is_refused_by_name(staff_client, firm):
    contact = ContactFactory(client=_client(firm))
    address = ContactAddressFactory(contact=contact, address="kari@alder.test")
    response = staff_client.post(
        reverse("portal:address_edit", args=[contact.client.pk, address.pk]),
        {"address": "kari\u200b@alder.test", "receives_invoices": "on"},
    )
    assert response.status_code == 400
    assert "ZERO WIDTH SPACE" in response.content.decode()
    address.refresh_from_db()
    assert address.address == "kari@alder.test"


def test_making_an_address_primary_unsets_the_old_one(staff_client, firm):
    contact = ContactFactory(client=_client(firm))
    old = ContactAddressFactory(contact=contact, is_primary=True)
    new = ContactAddressFactory(contact=contact, is_primary=False)
    staff_client.post(
        reverse("portal:address_edit", args=[contact.client.pk, new.pk]),
        {"address": new.address, "is_primary": "on", "receives_invoices": "on"},
    )
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.is_primary, new.is_primary) == (False, True)


def test_removing_the_primary_address_promotes_another(staff_client, firm):
    contact = ContactFactory(client=_client(firm))
    primary = ContactAddressFactory(contact=contact, is_primary=True)
    other = ContactAddressFactory(contact=contact, is_primary=False)
    staff_client.post(reverse("portal:address_delete", args=[contact.client.pk, primary.pk]))
    other.refresh_from_db()
    assert other.is_primary
    assert not ContactAddress.objects.filter(pk=primary.pk).exists()


def test_a_contact_can_be_renamed_and_removed(staff_client, firm):
    contact = ContactFactory(client=_client(firm), name="Old Name")
    staff_client.post(
        reverse("portal:contact_edit", args=[contact.client.pk, contact.pk]), {"name": "New Name"}
    )
    contact.refresh_from_db()
    assert contact.name == "New Name"
    staff_client.post(reverse("portal:contact_delete", args=[contact.client.pk, contact.pk]))
    assert not Contact.objects.exists()


def test_removing_a_contact_needs_a_post(staff_client, firm):
    contact = ContactFactory(client=_client(firm))
    response = staff_client.get(
        reverse("portal:contact_delete", args=[contact.client.pk, contact.pk])
    )
    assert response.status_code == 405
    assert Contact.objects.exists()
