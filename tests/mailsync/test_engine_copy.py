"""The message rows of a batch: COPY on PostgreSQL, INSERT elsewhere, the same rows."""

from __future__ import annotations

import datetime

import pytest
from django.db import IntegrityError, transaction

from mailsync import engine
from mailsync.models import Message
from mailsync.parsing import message_parse

pytestmark = pytest.mark.django_db

RAW = (
    b"From: Birch <client@client.test>\r\nTo: me@firm.test, b@firm.test\r\n"
    b"Subject: Copy \xc3\xa9\r\nMessage-ID: <copy@c>\r\n"
    b"Date: Mon, 03 Mar 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello \xc3\xa9 \x00-free body.\r\n"
)


def _new_message(firm, raw: bytes = RAW) -> Message:
    parsed = message_parse(raw)
    return Message(firm_id=firm.pk, key=parsed.key, **engine.message_fields(parsed, raw))


def _stored(pk: int) -> dict:
    row = Message.objects.filter(pk=pk).values().get()
    row["raw"] = Message.objects.get(pk=pk).raw  # from the blob store the row names
    del row["id"], row["created"]
    return row


@pytest.mark.skipif(not engine._copy_available(), reason="COPY needs PostgreSQL (psycopg 3)")
def test_copied_rows_read_back_as_inserted_rows(firm):
    copied = _new_message(firm)
    engine._insert_messages([copied], lz4=False, copy=True)
    copied_row = _stored(copied.pk)
    Message.objects.filter(pk=copied.pk).delete()

    inserted = _new_message(firm)
    engine._insert_messages([inserted], lz4=False, copy=False)

    assert copied_row == _stored(inserted.pk)
    assert copied_row["raw"] == RAW
    assert copied_row["to_addresses"] == ["me@firm.test", "b@firm.test"]
    assert copied_row["date"] == datetime.datetime(2025, 3, 3, 10, tzinfo=datetime.UTC)


@pytest.mark.skipif(not engine._copy_available(), reason="COPY needs PostgreSQL (psycopg 3)")
def test_copied_messages_get_distinct_ids_and_a_created_time(firm):
    messages = [_new_message(firm, RAW.replace(b"copy@c", f"c{n}@c".encode())) for n in range(3)]

    engine._insert_messages(messages, lz4=engine._lz4_available(), copy=True)

    assert len({message.pk for message in messages}) == 3
    assert (
        Message.objects.filter(pk__in=[m.pk for m in messages], created__isnull=False).count() == 3
    )
    # The sequence moved past them: a plain INSERT afterwards does not collide.
    later = Message.objects.create(firm_id=firm.pk, key="later", thread_key="t")
    assert later.pk > max(message.pk for message in messages)


@pytest.mark.skipif(not engine._copy_available(), reason="COPY needs PostgreSQL (psycopg 3)")
def test_a_key_stored_meanwhile_fails_the_copy_as_an_integrity_error(firm):
    engine._insert_messages([_new_message(firm)], lz4=False, copy=True)

    # The engine catches this and stores the batch one by one (the concurrent-sync path).
    with pytest.raises(IntegrityError), transaction.atomic():
        engine._insert_messages([_new_message(firm)], lz4=False, copy=True)

    assert Message.objects.count() == 1
