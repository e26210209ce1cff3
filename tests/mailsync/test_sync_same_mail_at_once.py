"""Two members' mailboxes holding the same mail, synced at the same moment by two workers:
each message is stored once, both mailboxes name it, nothing fails. Against a real Dovecot
and PostgreSQL, with the first worker held inside its batch's transaction (its messages
inserted, not committed) until the second is waiting on them."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection as db_connection

from mailsync import engine
from mailsync.engine import SyncReport, mailbox_sync
from mailsync.models import MailboxConnection, Message, MessageClientLink, MessageSource
from tests.db_locks import someone_waits_for_a_lock
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.mailsync.factories import connect_mailbox, fernet_key  # noqa: F401
from tests.servers.dovecot_fixtures import MailboxUser

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        db_connection.vendor != "postgresql", reason="row locks and real concurrency"
    ),
]

MESSAGES = 6


def _mail(n: int) -> bytes:
    return (
        f"From: Client <anna@birch.test>\r\nTo: me@firm.test\r\nSubject: Invoice {n}\r\n"
        f"Message-ID: <same{n}@birch.test>\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
    ).encode()


def _mailbox_holding_the_mail(firm, user: MailboxUser) -> MailboxConnection:
    for n in range(1, MESSAGES + 1):
        user.server.append(user.name, _mail(n))
    return connect_mailbox(firm, user)


class Worker(threading.Thread):
    """``mailbox_sync`` in its own thread, with its own database connection."""

    def __init__(self, connection: MailboxConnection) -> None:
        super().__init__()
        self.connection = connection
        self.report: SyncReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = mailbox_sync(self.connection)
        except BaseException as exc:  # looked at by the test
            self.error = exc
        finally:
            db_connection.close()


def test_the_same_mail_synced_by_two_workers_at_once_is_stored_once(
    firm, dovecot, mailbox_user, monkeypatch, settings
):
    settings.MAILSYNC_BATCH_SIZE = MESSAGES  # one batch each: they collide on every message
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@birch.test")
    dovecot.add_user("colleague", "pw-colleague")
    first = Worker(_mailbox_holding_the_mail(firm, mailbox_user))
    second = Worker(
        _mailbox_holding_the_mail(firm, MailboxUser("colleague", "pw-colleague", dovecot))
    )
    # The first worker stops inside its batch's transaction, its messages inserted.
    inserted, go_on = threading.Event(), threading.Event()
    insert = engine._insert_messages

    def insert_then_wait(*args, **kwargs):
        rows = insert(*args, **kwargs)
        if threading.current_thread() is first:
            inserted.set()
            assert go_on.wait(60)
        return rows

    monkeypatch.setattr(engine, "_insert_messages", insert_then_wait)
    one_by_one = engine._store_batch_one_by_one
    fell_back: list[threading.Thread] = []

    def note_the_fallback(**kwargs):
        fell_back.append(threading.current_thread())
        return one_by_one(**kwargs)

    monkeypatch.setattr(engine, "_store_batch_one_by_one", note_the_fallback)

    first.start()
    assert inserted.wait(60)
    second.start()  # inserts the same messages: waits for the first's transaction
    deadline = time.monotonic() + 60
    while not someone_waits_for_a_lock():
        assert time.monotonic() < deadline, "the second worker never waited"
        time.sleep(0.05)
    go_on.set()
    first.join(60)
    second.join(60)

    assert (first.error, second.error) == (None, None)
    assert fell_back == [second]  # its insert lost the race and it stored them one by one
    assert (first.report.state, second.report.state) == ("ok", "ok")
    assert first.report.new == MESSAGES
    assert (second.report.new, second.report.duplicates) == (0, MESSAGES)
    assert Message.objects.count() == MESSAGES
    assert MessageSource.objects.count() == 2 * MESSAGES
    assert MessageClientLink.objects.filter(client=client).count() == MESSAGES
