"""The stored link state (`Message.linked`, `MessageClientLink.message_date`) always equals
what the links say, whichever way mail is stored and whatever linking or unlinking
happened since: the unlinked-mail page and a client's Email tab read only the stored state."""

from __future__ import annotations

import datetime
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsync import engine, services
from mailsync.models import MailboxFolder, Message, MessageClientLink
from mailsync.parsing import message_parse
from portal.addresses import validate_address
from portal.models import ContactAddress
from portal.services import contact_address_remove, contact_addresses_add
from tests.factories import ClientFactory, ContactFactory, FirmFactory
from tests.mailsync.factories import (
    MailboxConnectionFactory,
    fernet_key,  # noqa: F401
)

pytestmark = pytest.mark.django_db

POOL = ["anna@birch.test", "bob@cedar.test", "carl@dune.test", "dora@elm.test"]
_serial = itertools.count()


def _raw(addresses: list[str], *, dated: bool = True) -> bytes:
    n = next(_serial)
    date = f"Date: Mon, {1 + n % 28:02d} Mar 2025 10:00:00 +0000\r\n" if dated else ""
    return (
        f"From: {addresses[0]}\r\nTo: me@firm.test, {', '.join(addresses[1:]) or 'x@y.test'}\r\n"
        f"Subject: Mail {n}\r\nMessage-ID: <m{n}@state.test>\r\n{date}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
    ).encode()


def _sync(connection, folder, mails: list[tuple[list[str], bool]], path: str) -> None:
    items = []
    for addresses, dated in mails:
        raw = _raw(addresses, dated=dated)
        items.append((message_parse(raw), engine.Fetched(raw=raw, internaldate=None, uid=None)))
    for n, (_parsed, fetched) in enumerate(items):
        fetched.uid = next(_serial) * 10 + n
    report = engine.SyncReport()
    if path == "one by one":
        engine._store_batch_one_by_one(
            connection=connection, folder=folder, parsed_items=items, report=report
        )
    else:
        copy = path == "copy" and engine._copy_available()
        engine._store_batch(
            connection=connection, folder=folder, parsed_items=items, report=report, lz4=False,
            copy=copy,
        )  # fmt: skip


def _assert_stored_state_matches_the_links(firm) -> None:
    has_links = set(
        MessageClientLink.objects.filter(message__firm=firm).values_list("message_id", flat=True)
    )
    for pk, linked in Message.objects.filter(firm=firm).values_list("pk", "linked"):
        assert linked == (pk in has_links), f"message {pk}: linked={linked}"
    for link_date, message_date in MessageClientLink.objects.filter(message__firm=firm).values_list(
        "message_date", "message__date"
    ):
        assert link_date == message_date


STEP = st.one_of(
    st.tuples(
        st.just("sync"),
        st.lists(
            st.tuples(st.lists(st.sampled_from(POOL), min_size=1, max_size=3), st.booleans()),
            min_size=1,
            max_size=4,
        ),
        st.sampled_from(["copy", "insert", "one by one"]),
    ),
    st.tuples(st.just("send"), st.lists(st.sampled_from(POOL), min_size=1, max_size=2)),
    st.tuples(st.just("add address"), st.sampled_from(POOL), st.integers(0, 1)),
    st.tuples(st.just("remove address"), st.sampled_from(POOL)),
    st.tuples(st.just("link from unlinked mail"), st.sampled_from(POOL), st.integers(0, 1)),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, min_size=1, max_size=8))
def test_the_stored_link_state_equals_the_links_after_any_syncing_and_relinking(steps):
    firm = FirmFactory()
    connection = MailboxConnectionFactory(firm=firm, email_address="me@firm.test")
    folder = MailboxFolder.objects.create(connection=connection, name="INBOX")
    clients = [ClientFactory(firm=firm), ClientFactory(firm=firm)]
    contacts = [ContactFactory(client=client) for client in clients]
    for step in steps:
        kind = step[0]
        if kind == "sync":
            _sync(connection, folder, step[1], step[2])
        elif kind == "send":
            raw = _raw(["me@firm.test", *step[1]])
            engine.message_store(firm_id=firm.pk, parsed=message_parse(raw), raw=raw)
        elif kind == "add address":
            contact_addresses_add(contact=contacts[step[2]], addresses=[validate_address(step[1])])
            services.messages_relink(firm=firm, normalized_addresses={step[1]})
        elif kind == "remove address":
            for address in ContactAddress.objects.filter(firm=firm, normalized=step[1]):
                contact_address_remove(address=address)
            services.messages_relink(firm=firm, normalized_addresses={step[1]})
        else:
            services.unlinked_address_link(
                firm=firm,
                address=validate_address(step[1]),
                client=clients[step[2]],
                contact=contacts[step[2]],
            )
        _assert_stored_state_matches_the_links(firm)


def test_a_message_whose_last_client_link_goes_is_unlinked_again():
    firm = FirmFactory()
    connection = MailboxConnectionFactory(firm=firm, email_address="me@firm.test")
    folder = MailboxFolder.objects.create(connection=connection, name="INBOX")
    contact = ContactFactory(client=ClientFactory(firm=firm))
    contact_addresses_add(contact=contact, addresses=[validate_address("anna@birch.test")])
    _sync(connection, folder, [(["anna@birch.test"], True)], "copy")
    message = Message.objects.get(firm=firm)
    assert message.linked
    assert MessageClientLink.objects.get(message=message).message_date == message.date

    contact_address_remove(address=ContactAddress.objects.get(normalized="anna@birch.test"))
    services.messages_relink(firm=firm, normalized_addresses={"anna@birch.test"})

    message.refresh_from_db()
    assert not message.linked


def test_a_client_link_carries_its_messages_date_for_the_email_tabs_order():
    firm = FirmFactory()
    connection = MailboxConnectionFactory(firm=firm, email_address="me@firm.test")
    folder = MailboxFolder.objects.create(connection=connection, name="INBOX")
    contact = ContactFactory(client=ClientFactory(firm=firm))
    contact_addresses_add(contact=contact, addresses=[validate_address("anna@birch.test")])

    _sync(connection, folder, [(["anna@birch.test"], True), (["anna@birch.test"], False)], "copy")

    dates = sorted(
        MessageClientLink.objects.values_list("message_date", flat=True),
        key=lambda d: d or datetime.datetime.min.replace(tzinfo=datetime.UTC),
    )
    assert dates == sorted(
        Message.objects.filter(firm=firm).values_list("date", flat=True),
        key=lambda d: d or datetime.datetime.min.replace(tzinfo=datetime.UTC),
    )
