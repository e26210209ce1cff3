"""One sync per mailbox, and a sync that stops when told: against a real Dovecot and
PostgreSQL, with the first worker really paused in its own thread (its own database
connection) while a second worker or the member acts.

Every batch commit locks the connection row, checks that its run still holds the lease and
that the mailbox is still active, and renews the lease, in the same transaction as the
batch and its cursor (see services.connection_lease_renew).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from mailsync import engine, services
from mailsync.engine import SyncReport, mailbox_sync
from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageSource
from tests.mailsync.factories import connect_mailbox, fernet_key  # noqa: F401
from tests.servers.dovecot_fixtures import MailboxUser

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        db_connection.vendor != "postgresql", reason="row locks and real concurrency"
    ),
]

BATCH = 2
MESSAGES = 6


@pytest.fixture(autouse=True)
def small_batches(settings):
    settings.MAILSYNC_BATCH_SIZE = BATCH


def _mail(n: int) -> bytes:
    return (
        f"From: Client <client@client.test>\r\nTo: me@firm.test\r\nSubject: Mail {n}\r\n"
        f"Message-ID: <lease{n}@client.test>\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
    ).encode()


def _mailbox(firm, user: MailboxUser, count: int = MESSAGES) -> MailboxConnection:
    for n in range(1, count + 1):
        user.server.append(user.name, _mail(n))
    return connect_mailbox(firm, user)


class PausedSync:
    """``mailbox_sync`` of ``connection`` in its own thread, paused after its first batch
    committed until ``resume()``: the worker that stalls (a long GC, a slow disk, a
    suspended VM) while the world moves on."""

    def __init__(self, connection: MailboxConnection) -> None:
        self.connection = connection
        self.token = connection.lease_token
        self.report: SyncReport | None = None
        self.error: BaseException | None = None
        self._paused = threading.Event()
        self._resume = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _on_batch(self, folder: str, done: int, total: int) -> None:
        if done == BATCH:
            self._paused.set()
            self._resume.wait(timeout=60)

    def _run(self) -> None:
        try:
            self.report = mailbox_sync(self.connection, on_batch=self._on_batch)
        except BaseException as exc:  # raised again in the test's thread by resume()
            self.error = exc
        finally:
            self._paused.set()
            db_connection.close()  # this thread's own connection

    def start_and_wait_for_pause(self) -> None:
        self._thread.start()
        assert self._paused.wait(timeout=60)

    def resume(self) -> SyncReport:
        self._resume.set()
        self._thread.join(timeout=60)
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def _expire_lease(connection: MailboxConnection) -> None:
    past = timezone.now() - datetime.timedelta(seconds=1)
    MailboxConnection.objects.filter(pk=connection.pk).update(lease_until=past)


def _folder(connection: MailboxConnection) -> MailboxFolder:
    return MailboxFolder.objects.get(connection=connection, name="INBOX")


def test_a_sync_whose_lease_was_taken_over_writes_nothing_more(firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user)
    first = PausedSync(services.connection_claim(pk=connection.pk, force=True))
    first.start_and_wait_for_pause()
    # The first worker stalled past its lease; a second worker claims the mailbox and
    # syncs the rest of it.
    _expire_lease(connection)
    second = services.connection_claim(pk=connection.pk, force=True)
    assert second is not None
    second_report = mailbox_sync(second)
    written_by_second = set(Message.objects.values_list("pk", flat=True))

    first_report = first.resume()

    assert first_report.state == services.LEASE_LOST
    assert (first_report.new, second_report.new) == (BATCH, MESSAGES - BATCH)
    # Nothing of the first worker's later batches reached the database...
    assert set(Message.objects.values_list("pk", flat=True)) == written_by_second
    assert Message.objects.count() == MessageSource.objects.count() == MESSAGES
    # ...and its cursor, behind the second worker's, never replaced it.
    assert _folder(connection).last_uid == MESSAGES
    # The lease is the second worker's, untouched by the first one's end (what the task
    # does once mailbox_sync returns).
    services.connection_release(connection=first.connection, token=first.token)
    connection.refresh_from_db()
    assert connection.lease_token == second.lease_token


def test_a_sync_whose_lease_ran_out_stops_even_if_nobody_took_it(firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user)
    first = PausedSync(services.connection_claim(pk=connection.pk, force=True))
    first.start_and_wait_for_pause()
    # Its server slot no longer counts it (see services._leases_on): going on could exceed
    # the server's connection cap.
    _expire_lease(connection)

    report = first.resume()

    assert report.state == services.LEASE_LOST
    assert Message.objects.count() == BATCH
    assert _folder(connection).last_uid == BATCH


def test_each_batch_renews_the_lease(firm, mailbox_user, settings):
    settings.MAILSYNC_LEASE_SECONDS = 600
    connection = _mailbox(firm, mailbox_user)
    claimed = services.connection_claim(pk=connection.pk, force=True)
    # Claimed long ago: without renewal the lease would run out in a minute.
    soon = timezone.now() + datetime.timedelta(minutes=1)
    MailboxConnection.objects.filter(pk=connection.pk).update(lease_until=soon)
    leases: list[datetime.datetime] = []

    def note_lease(folder: str, done: int, total: int) -> None:
        leases.append(MailboxConnection.objects.get(pk=connection.pk).lease_until)

    report = mailbox_sync(claimed, on_batch=note_lease)

    assert report.new == MESSAGES
    assert len(leases) == MESSAGES // BATCH
    assert all(lease > soon + datetime.timedelta(minutes=5) for lease in leases)


@pytest.mark.parametrize(
    "stop",
    [services.connection_stop, services.connection_remove],
    ids=["stop email sync", "remove mailbox"],
)
def test_stopping_the_mailbox_mid_run_ends_the_run_after_the_batch_in_progress(
    firm, mailbox_user, stop: Callable[..., None]
):
    connection = _mailbox(firm, mailbox_user)
    run = PausedSync(services.connection_claim(pk=connection.pk, force=True))
    run.start_and_wait_for_pause()

    stop(connection=MailboxConnection.objects.get(pk=connection.pk))
    report = run.resume()

    assert report.state == services.STOPPED
    assert report.new == BATCH
    assert Message.objects.count() == BATCH
    assert _folder(connection).last_uid == BATCH
    connection.refresh_from_db()
    # The stop stands: the stopped run recorded no success that would schedule it again.
    assert connection.next_attempt_at is None and connection.last_success_at is None


def test_a_stale_worker_cannot_put_an_old_uidvalidity_cursor_on_a_reread_folder(firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user)
    first = PausedSync(services.connection_claim(pk=connection.pk, force=True))
    first.start_and_wait_for_pause()
    old_uidvalidity = _folder(connection).uidvalidity
    # While the first worker stalls, the server renumbers the folder, and a second worker
    # (the first one's lease ran out) re-reads it in the new numbering.
    mailbox_user.server.set_uidvalidity(mailbox_user.name, "INBOX", 4242)
    _expire_lease(connection)
    second = services.connection_claim(pk=connection.pk, force=True)
    mailbox_sync(second)

    report = first.resume()

    assert report.state == services.LEASE_LOST
    folder = _folder(connection)
    assert folder.uidvalidity == 4242 != old_uidvalidity
    assert folder.last_uid == MESSAGES
    assert MessageSource.objects.filter(folder=folder).count() == MESSAGES
    assert Message.objects.count() == MESSAGES


def test_a_run_without_a_lease_never_moves_a_cursor_back_or_across_uidvalidity(firm, mailbox_user):
    # A run started by hand (no claim) while a worker re-read the folder: the cursor
    # update itself refuses a batch of the old numbering.
    connection = _mailbox(firm, mailbox_user)
    first = PausedSync(MailboxConnection.objects.get(pk=connection.pk))
    first.start_and_wait_for_pause()
    mailbox_user.server.set_uidvalidity(mailbox_user.name, "INBOX", 4343)
    second = services.connection_claim(pk=connection.pk, force=True)
    mailbox_sync(second)
    services.connection_release(connection=second)

    report = first.resume()

    assert report.state == "folder_changed"
    folder = _folder(connection)
    assert (folder.uidvalidity, folder.last_uid) == (4343, MESSAGES)
    assert Message.objects.count() == MESSAGES
    assert set(MessageSource.objects.values_list("uid", flat=True)) == set(range(1, MESSAGES + 1))


def test_a_stale_worker_does_not_reset_a_renumbered_folder_the_new_owner_read(
    firm, mailbox_user, monkeypatch
):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Zebra")  # synced after INBOX (by name)
    for n in (101, 102):
        server.append(mailbox_user.name, _mail(n), "Zebra")
    connection = _mailbox(firm, mailbox_user, count=0)
    mailbox_sync(connection)  # discovers Zebra, switched off
    services.folders_select(connection=connection, enabled_names={"INBOX", "Zebra"})
    mailbox_sync(connection)
    # The first worker stalls between INBOX and Zebra (its folder list, read before, still
    # has Zebra's old UIDVALIDITY).
    stalled, resume = threading.Event(), threading.Event()
    sync_folder = engine._sync_imap_folder

    def stall_before_zebra(box, run, folder):
        if folder.name == "Zebra" and threading.current_thread() is first:
            stalled.set()
            resume.wait(timeout=60)
        return sync_folder(box, run, folder)

    monkeypatch.setattr(engine, "_sync_imap_folder", stall_before_zebra)
    reports: list[SyncReport] = []
    claimed = services.connection_claim(pk=connection.pk, force=True)

    def run_first() -> None:
        try:
            reports.append(mailbox_sync(claimed))
        finally:
            stalled.set()
            db_connection.close()

    first = threading.Thread(target=run_first)
    first.start()
    assert stalled.wait(timeout=60)
    # The server renumbers Zebra; the second worker (the first one's lease ran out) re-reads
    # it and moves its cursor in the new numbering.
    server.set_uidvalidity(mailbox_user.name, "Zebra", 5151)
    _expire_lease(connection)
    mailbox_sync(services.connection_claim(pk=connection.pk, force=True))

    resume.set()
    first.join(timeout=60)

    assert [report.state for report in reports] == [services.LEASE_LOST]
    zebra = MailboxFolder.objects.get(connection=connection, name="Zebra")
    # Re-read once (by the second worker), not reset again behind its back.
    assert (zebra.uidvalidity, zebra.last_uid, zebra.reset_count) == (5151, 2, 1)
    assert MessageSource.objects.filter(folder=zebra).count() == 2
