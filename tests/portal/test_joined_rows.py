"""portal.joined_rows: one hand-written SELECT over several tables gives the instances a
queryset with ``only()`` would have, on whichever database the tests run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mailsync.models import MailboxConnection, MailboxFolder
from portal import joined_rows
from tests.mailsync.factories import (  # noqa: F401 (fernet_key: a fixture)
    MailboxConnectionFactory,
    MailboxFolderFactory,
    fernet_key,
)

pytestmark = pytest.mark.django_db

PARTS = (
    joined_rows.Part(MailboxConnection, "c", ("email_address", "last_success_at")),
    joined_rows.Part(MailboxFolder, "f", ("name", "gap_counts", "gap_checked_at")),
)


def _mailboxes_and_folders() -> list[tuple]:
    sql = (
        f"SELECT {joined_rows.columns(PARTS)} FROM {MailboxConnection._meta.db_table} c"  # noqa: S608
        f" LEFT JOIN {MailboxFolder._meta.db_table} f ON f.connection_id = c.id"
        " ORDER BY c.email_address, f.name"
    )
    return joined_rows.select(sql, [], PARTS)


def test_values_come_back_as_the_orm_gives_them(firm):
    checked = timezone.now() - timedelta(hours=3)
    mailbox = MailboxConnectionFactory(firm=firm, email_address="anna@firm.test")
    MailboxFolderFactory(
        connection=mailbox, name="INBOX", gap_counts={"server": 5}, gap_checked_at=checked
    )

    [(found, folder)] = _mailboxes_and_folders()

    assert found == mailbox
    assert found.email_address == "anna@firm.test"
    assert folder.gap_counts == {"server": 5}
    assert folder.gap_checked_at == checked
    assert folder.gap_checked_at == MailboxFolder.objects.get().gap_checked_at


def test_a_table_the_row_holds_nothing_of_is_none(firm):
    MailboxConnectionFactory(firm=firm, email_address="anna@firm.test")

    [(found, folder)] = _mailboxes_and_folders()

    assert found.email_address == "anna@firm.test"
    assert folder is None


def test_fields_not_read_load_when_asked_for(firm, django_assert_num_queries):
    mailbox = MailboxConnectionFactory(firm=firm, email_address="anna@firm.test", host="imap.x")

    [(found, _folder)] = _mailboxes_and_folders()

    assert found.get_deferred_fields() >= {"host"}
    with django_assert_num_queries(1):
        assert found.host == mailbox.host


def test_columns_are_quoted_for_the_database():
    quoted = connection.ops.quote_name("email_address")

    assert f"{connection.ops.quote_name('c')}.{quoted}" in joined_rows.columns(PARTS)


def test_plain_values_come_in_the_order_named_as_values_list_gives_them(firm):
    checked = timezone.now() - timedelta(hours=3)
    mailbox = MailboxConnectionFactory(firm=firm, email_address="anna@firm.test")
    MailboxFolderFactory(
        connection=mailbox, name="INBOX", gap_counts={"server": 5}, gap_checked_at=checked
    )
    # Not the models' order, and the key by its "pk" name.
    parts = (joined_rows.Part(MailboxFolder, "f", ("gap_checked_at", "name", "pk", "gap_counts")),)

    rows = joined_rows.values_from(parts, f"FROM {MailboxFolder._meta.db_table} f", [])

    assert rows == list(
        MailboxFolder.objects.values_list("gap_checked_at", "name", "pk", "gap_counts")
    )
    assert rows[0][0] == checked
