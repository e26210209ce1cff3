"""The cards of delivery problems and of addresses on dead domains come from the cache while
nothing they show has changed, and are built again the moment anything has: the database
raises the firm's DeliveryProblemsVersion (its counts or its cards) on every such write,
whoever writes it."""

from __future__ import annotations

from html import unescape

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.models import Invoice
from portal.models import Client, ContactAddress
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, FirmFactory
from tests.troubleshooting.test_problem_counts_version import _commit_at_once, postgresql_only
from tests.troubleshooting.test_problem_pages import _bounce, _delivery
from troubleshooting.models import AddressDomainCheck, DeliveryProblemsVersion

pytestmark = pytest.mark.django_db

CODE_PAGE = {"code": "delivery.hard_bounce"}


def _code_page(owner_client) -> str:
    response = owner_client.get(reverse("troubleshooting:dashboard"), CODE_PAGE)
    return unescape(response.content.decode())


def _client_tab(owner_client, client) -> str:
    response = owner_client.get(reverse("troubleshooting:client_problems", args=[client.pk]))
    return unescape(response.content.decode())


def _built(view) -> bool:
    """Whether ``view()`` read deliveries or addresses to build its cards."""
    with CaptureQueriesContext(connection) as captured:
        view()
    return any(
        '"invoicing_deliveryevent"' in query["sql"]
        or 'FROM "portal_contactaddress"' in query["sql"]
        for query in captured.captured_queries
    )


@pytest.fixture
def bounced(firm):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    delivery = _delivery(client, "anna@birch.test")
    _bounce(delivery)
    return delivery


@pytest.fixture
def on_dead_domain(firm):
    client = ClientFactory(firm=firm, display_name="Maple Bakery")
    ContactAddressFactory(contact=ContactFactory(client=client), address="ola@gone.test")
    AddressDomainCheck.objects.create(
        firm=firm, domain="gone.test", ok=False, summary="No MX.", checked=timezone.now()
    )
    return client


def test_a_second_look_at_a_codes_cards_builds_nothing(owner_client, bounced):
    assert _built(lambda: _code_page(owner_client))

    assert not _built(lambda: _code_page(owner_client))
    assert "anna@birch.test" in _code_page(owner_client)


def test_a_second_look_at_a_clients_problems_builds_nothing(owner_client, bounced):
    assert _built(lambda: _client_tab(owner_client, bounced.client))

    assert not _built(lambda: _client_tab(owner_client, bounced.client))
    assert "anna@birch.test" in _client_tab(owner_client, bounced.client)


def test_a_second_bounce_of_the_same_email_shows_at_once(owner_client, bounced):
    assert "<dt>Occurrences</dt><dd>1</dd>" in _code_page(owner_client)

    _bounce(bounced, text="550 5.1.1 <anna@birch.test>: mailbox disabled")

    page = _code_page(owner_client)
    assert "<dt>Occurrences</dt><dd>2</dd>" in page
    assert "mailbox disabled" in page
    assert "mailbox disabled" in _client_tab(owner_client, bounced.client)


def test_a_failure_event_removed_shows_at_once(owner_client, bounced):
    _bounce(bounced, text="550 5.1.1 <anna@birch.test>: mailbox disabled")
    assert "<dt>Occurrences</dt><dd>2</dd>" in _code_page(owner_client)

    DeliveryEvent.objects.filter(delivery=bounced, diagnostic__contains="disabled").delete()

    assert "<dt>Occurrences</dt><dd>1</dd>" in _code_page(owner_client)


def test_an_address_rewritten_on_the_delivery_shows_at_once(owner_client, bounced):
    _code_page(owner_client)

    Delivery.objects.filter(pk=bounced.pk).update(address="Anna@Birch.test")

    assert "Anna@Birch.test" in _code_page(owner_client)


def test_a_renumbered_invoice_shows_at_once(owner_client, bounced):
    _code_page(owner_client)

    Invoice.objects.filter(pk=bounced.invoice_id).update(number=4711)

    assert "4711" in _code_page(owner_client)


def test_a_renamed_client_shows_on_its_cards_at_once(owner_client, bounced):
    _code_page(owner_client)

    Client.objects.filter(pk=bounced.client_id).update(display_name="Birch Care")

    assert "Birch Care" in _code_page(owner_client)


def test_an_address_on_a_dead_domain_rewritten_shows_at_once(owner_client, on_dead_domain):
    assert "ola@gone.test" in _client_tab(owner_client, on_dead_domain)

    ContactAddress.objects.filter(contact__client=on_dead_domain).update(address="Ola@gone.test")

    assert "Ola@gone.test" in _client_tab(owner_client, on_dead_domain)


def test_a_dead_domain_checked_again_shows_its_new_answer_at_once(owner_client, on_dead_domain):
    assert "No MX." in _client_tab(owner_client, on_dead_domain)

    AddressDomainCheck.objects.filter(domain="gone.test").update(
        summary="The domain does not exist (NXDOMAIN)."
    )

    assert "The domain does not exist (NXDOMAIN)." in _client_tab(owner_client, on_dead_domain)


def test_another_firms_bounce_leaves_the_cached_cards_in_place(owner_client, bounced):
    _code_page(owner_client)

    other = ClientFactory(firm=FirmFactory(), display_name="Elsewhere Ltd")
    _bounce(_delivery(other, "x@elsewhere.test"))

    assert not _built(lambda: _code_page(owner_client))


def test_a_note_shows_at_once_on_cached_cards(owner_client, bounced):
    _code_page(owner_client)

    owner_client.post(
        reverse("troubleshooting:mark_handled"),
        {"code": "delivery.hard_bounce", "subject": f"delivery:{bounced.pk}", "note": "Called"},
    )

    assert "Marked as handled" in _code_page(owner_client)


def test_cards_are_kept_per_language(owner_client, bounced):
    assert "Sending server" in _code_page(owner_client)  # who reported the bounce

    owner_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fi"
    with translation.override("fi"):
        in_finnish = str(DeliveryEvent.Source.SMTP.label)

    assert in_finnish != "Sending server"
    assert in_finnish in _code_page(owner_client)


def _cards(firm_pk: int) -> int:
    row = DeliveryProblemsVersion.objects.filter(firm_id=firm_pk).first()
    return row.cards if row else 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_bounces_of_one_firm_committed_at_once_each_raise_the_cards():
    firm = FirmFactory()
    deliveries = [_delivery(ClientFactory(firm=firm), f"p{n}@birch.test") for n in range(2)]
    for delivery in deliveries:
        _bounce(delivery)
    before = _cards(firm.pk)

    _commit_at_once(lambda d=delivery: _bounce(d, text="550 again") for delivery in deliveries)

    assert _cards(firm.pk) == before + 2


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_bounce_that_fails_midway_leaves_the_cards_version_alone():
    firm = FirmFactory()
    delivery = _delivery(ClientFactory(firm=firm), "anna@birch.test")
    _bounce(delivery)
    before = _cards(firm.pk)

    with pytest.raises(RuntimeError), transaction.atomic():
        _bounce(delivery, text="550 again")
        raise RuntimeError("the worker dies before its commit")

    assert _cards(firm.pk) == before
