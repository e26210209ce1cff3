"""The delivery timeline on an invoice's page is rendered once per content (invoicing.timeline,
portal.rows): whatever changed since a member last saw the page shows at once, and what a
row shows for one member never reaches another."""

from __future__ import annotations

import re

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from accounts.models import Role
from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_link_create
from tests.factories import (
    ClientFactory,
    ContactAddressFactory,
    ContactFactory,
    MembershipFactory,
)
from tests.invoicing.factories import invoice_with_lines

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def sent(firm) -> tuple[Invoice, Delivery]:
    """An invoice delivered to the client's one address, with a live Pay Now link."""
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")
    invoice = invoice_with_lines(client=client, status=Invoice.Status.SENT)
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address="anna@client.test",
        normalized="anna@client.test",
        status=Delivery.Status.DELIVERED,
        verp_token=f"v-{invoice.pk}",
    )
    DeliveryEvent.objects.create(delivery=delivery, kind="delivered", source="webhook")
    pay_link_create(delivery=delivery)
    return invoice, delivery


def _page(http, invoice) -> str:
    response = http.get(invoice.get_absolute_url())
    assert response.status_code == 200
    return response.content.decode()


def test_a_bounce_after_the_page_was_seen_shows_on_the_next_view(owner_client, sent):
    invoice, delivery = sent
    assert "Server reply" not in _page(owner_client, invoice)

    DeliveryEvent.objects.create(
        delivery=delivery,
        kind="bounced",
        source="dsn",
        reply_code="550",
        status_code="5.1.1",
        diagnostic="mailbox unavailable",
    )
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.BOUNCED, problem_code="delivery.hard_bounce"
    )
    page = _page(owner_client, invoice)

    assert "550 5.1.1 mailbox unavailable" in page
    assert "Bounce message" in page  # who reported it
    assert 'data-problem="delivery.hard_bounce"' in page


def test_an_address_fixed_on_the_client_shows_as_no_longer_on_file(owner_client, sent):
    invoice, _delivery = sent
    assert "no longer on the client" not in _page(owner_client, invoice)

    invoice.client.contacts.get().addresses.update(
        address="anna@client.example", normalized="anna@client.example"
    )

    assert "no longer on the client" in _page(owner_client, invoice)


def test_staff_do_not_see_the_revoke_button_an_owner_saw_on_the_same_timeline(
    owner_client, staff_client, sent
):
    invoice, _delivery = sent
    assert "Revoke Pay Now link" in _page(owner_client, invoice)

    assert "Revoke Pay Now link" not in _page(staff_client, invoice)


def test_a_revoked_link_shows_revoked_instead_of_the_button(owner_client, sent):
    invoice, delivery = sent
    assert "Pay Now link revoked" not in _page(owner_client, invoice)

    PayLink.objects.filter(delivery=delivery).update(revoked_at=timezone.now())
    page = _page(owner_client, invoice)

    assert "Pay Now link revoked" in page
    assert "Revoke Pay Now link" not in page


def _member_client(membership) -> HttpClient:
    http = HttpClient(enforce_csrf_checks=True)
    http.force_login(membership.user)
    return http


def _revoke_form(page: str) -> tuple[str, str]:
    """The revoke form's action and the CSRF token it posts."""
    form = re.search(
        r'<form class="inline" method="post" action="([^"]+/revoke[^"]*)">(.*?)</form>', page, re.S
    )
    assert form, "no revoke form on the page"
    return form.group(1), CSRF_FIELD.search(form.group(2)).group(1)


def test_an_admin_revokes_with_the_token_of_their_own_page_not_the_owners(firm, owner, sent):
    invoice, delivery = sent
    owner_http = _member_client(owner)
    admin_http = _member_client(MembershipFactory(firm=firm, role=Role.ADMIN))
    _action, owners_token = _revoke_form(_page(owner_http, invoice))
    action, admins_token = _revoke_form(_page(admin_http, invoice))

    refused = admin_http.post(action, {"csrfmiddlewaretoken": owners_token})
    assert refused.status_code == 403
    revoked = admin_http.post(action, {"csrfmiddlewaretoken": admins_token})

    assert revoked.status_code == 302
    assert PayLink.objects.get(delivery=delivery).revoked_at is not None


def test_the_timeline_speaks_each_members_language(owner_client, owner, sent):
    invoice, _delivery = sent
    assert "Queued" in _page(owner_client, invoice)
    owner.user.language = "fi"
    owner.user.save(update_fields=["language"])

    page = _page(owner_client, invoice)

    assert "Jonossa" in page
    assert "Queued" not in page
