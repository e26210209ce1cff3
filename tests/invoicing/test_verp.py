"""VERP: one Return-Path per delivery, and reading the delivery back out of it."""

from __future__ import annotations

import datetime

import pytest

from invoicing.delivery.models import Delivery
from invoicing.delivery.verp import new_verp_token, verp_address, verp_token_from
from invoicing.models import Invoice
from tests.factories import ClientFactory, FirmFactory


@pytest.fixture
def delivery(db) -> Delivery:
    firm = FirmFactory()
    client = ClientFactory(firm=firm)
    invoice = Invoice.objects.create(
        firm=firm, client=client, number=1, due_date=datetime.date(2030, 1, 31)
    )
    return Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address="ana@client.test",
        normalized="ana@client.test",
        verp_token="0123456789abcdef0123456789abcdef",
    )


def test_it_puts_the_token_after_a_plus(settings, delivery):
    settings.BOUNCE_ADDRESS = "bounces@bounce.example"
    assert verp_address(delivery) == ("bounces+0123456789abcdef0123456789abcdef@bounce.example")


def test_it_gives_no_address_while_no_bounce_address_is_set(settings, delivery):
    settings.BOUNCE_ADDRESS = ""
    assert verp_address(delivery) == ""


def test_it_reads_the_token_back_in_every_form_headers_carry(settings, delivery):
    settings.BOUNCE_ADDRESS = "bounces@bounce.example"
    address = verp_address(delivery)
    for form in (address, f"<{address}>", f'"Bounces" <{address}>', address.upper()):
        token = verp_token_from(form)
        assert token is not None
        assert token.lower() == delivery.verp_token


def test_it_round_trips_new_tokens(settings, delivery):
    settings.BOUNCE_ADDRESS = "bounces@bounce.example"
    delivery.verp_token = new_verp_token()
    assert len(delivery.verp_token) == 32
    assert verp_token_from(verp_address(delivery)) == delivery.verp_token


@pytest.mark.parametrize(
    "address",
    [
        "",
        None,
        "bounces@bounce.example",  # no token
        "bounces+0123456789abcdef0123456789abcdef@other.example",  # another domain
        "other+0123456789abcdef0123456789abcdef@bounce.example",  # another mailbox
        "bounces+short@bounce.example",  # not a token we make
        "bounces+0123456789abcdef0123456789abcdef\r\nX: y@bounce.example",
        "ana@client.test",
    ],
)
def test_it_ignores_addresses_that_are_not_ours(settings, address):
    settings.BOUNCE_ADDRESS = "bounces@bounce.example"
    assert verp_token_from(address) is None


def test_it_reads_nothing_while_no_bounce_address_is_set(settings):
    settings.BOUNCE_ADDRESS = ""
    assert verp_token_from("bounces+0123456789abcdef0123456789abcdef@bounce.example") is None
