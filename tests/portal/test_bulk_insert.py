"""Many rows of one model in one INSERT (portal.bulk_insert.rows_insert)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, transaction

from mailsync.models import Message, MessageClientLink
from portal.bulk_insert import rows_insert
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

COLUMNS = ("message_id", "client_id", "message_date")


def _messages(firm, count):
    return [
        Message.objects.create(firm_id=firm.pk, key=f"k{n}", thread_key="t") for n in range(count)
    ]


def test_the_rows_are_stored_with_their_values_and_the_time_of_creation(firm):
    client = ClientFactory(firm=firm)
    first, second = _messages(firm, 2)
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

    rows_insert(
        MessageClientLink, COLUMNS, [(first.pk, client.pk, when), (second.pk, client.pk, None)]
    )

    links = {link.message_id: link for link in MessageClientLink.objects.filter(client=client)}
    assert links[first.pk].message_date == when
    assert links[second.pk].message_date is None
    assert all(link.created is not None for link in links.values())


def test_ignoring_conflicts_leaves_out_the_rows_already_there_and_stores_the_rest(firm):
    client = ClientFactory(firm=firm)
    old, new = _messages(firm, 2)
    MessageClientLink.objects.create(message=old, client=client)

    rows_insert(
        MessageClientLink,
        COLUMNS,
        [(old.pk, client.pk, None), (new.pk, client.pk, None)],
        ignore_conflicts=True,
    )

    assert MessageClientLink.objects.filter(client=client).count() == 2


def test_a_conflict_not_ignored_stores_nothing_and_says_so(firm):
    client = ClientFactory(firm=firm)
    old, new = _messages(firm, 2)
    MessageClientLink.objects.create(message=old, client=client)

    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert(
            MessageClientLink, COLUMNS, [(new.pk, client.pk, None), (old.pk, client.pk, None)]
        )

    assert list(
        MessageClientLink.objects.filter(client=client).values_list("message", flat=True)
    ) == [old.pk]


def test_no_rows_is_no_statement(firm, django_assert_num_queries):
    with django_assert_num_queries(0):
        rows_insert(MessageClientLink, COLUMNS, [])
