"""Connections per server: no more than MAILSYNC_MAX_CONNECTIONS_PER_HOST mailboxes on one
server sync at once, whichever workers (threads, processes, machines) claim them."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone

from mailsync import services, tasks
from mailsync.models import MailboxConnection
from tests.db_locks import only_on_postgresql
from tests.mailsync.factories import MailboxConnectionFactory, fernet_key  # noqa: F401

HOST = "mail.hosted.test"


@pytest.fixture(autouse=True)
def cap_of_two(settings):
    settings.MAILSYNC_MAX_CONNECTIONS_PER_HOST = 2


def _mailboxes(count: int, host: str = HOST) -> list[MailboxConnection]:
    return MailboxConnectionFactory.create_batch(count, host=host)


def _claim(mailbox: MailboxConnection) -> MailboxConnection | None:
    return services.connection_claim(pk=mailbox.pk)


def test_with_a_cap_of_two_the_third_mailbox_on_a_server_is_refused(db):
    first, second, third = _mailboxes(3)

    assert _claim(first) is not None
    assert _claim(second) is not None
    assert _claim(third) is None


def test_the_refused_mailbox_gets_the_slot_once_another_sync_releases_it(db):
    first, second, third = _mailboxes(3)
    held = _claim(first)
    _claim(second)
    assert _claim(third) is None

    services.connection_release(connection=held)

    assert _claim(third) is not None


def test_a_refused_mailbox_stays_due_without_a_failure_or_backoff(db):
    first, second, third = _mailboxes(3)
    _claim(first)
    _claim(second)
    due_since = timezone.now() - datetime.timedelta(minutes=5)
    MailboxConnection.objects.filter(pk=third.pk).update(next_attempt_at=due_since)

    tasks.sync_mailbox(third.pk)  # what a worker runs for the dispatched task

    third.refresh_from_db()
    assert third.next_attempt_at == due_since
    assert third.consecutive_failures == 0
    assert third.health == MailboxConnection.Health.OK
    assert third.problem_code == ""
    assert third.lease_token == ""
    # ...so the next dispatch offers it again.
    assert third.pk in services.connections_due()


def test_mailboxes_on_different_servers_do_not_share_slots(db):
    first, second = _mailboxes(2)
    elsewhere = _mailboxes(1, host="imap.other-host.test")[0]
    _claim(first)
    _claim(second)

    assert _claim(elsewhere) is not None


def test_the_server_name_counts_whatever_its_case(db):
    first, second = _mailboxes(2)
    shouting = _mailboxes(1, host=HOST.upper())[0]
    _claim(first)
    _claim(second)

    assert _claim(shouting) is None


def test_an_expired_lease_does_not_hold_a_slot(db):
    first, second, third = _mailboxes(3)
    _claim(first)
    _claim(second)
    # The worker syncing `first` was killed: its lease runs out.
    expired = timezone.now() - datetime.timedelta(seconds=1)
    MailboxConnection.objects.filter(pk=first.pk).update(lease_until=expired)

    assert _claim(third) is not None


def test_the_watchdog_frees_the_slot_of_a_killed_worker(db):
    first, second, third = _mailboxes(3)
    _claim(first)
    _claim(second)
    expired = timezone.now() - datetime.timedelta(seconds=1)
    MailboxConnection.objects.filter(pk=first.pk).update(lease_until=expired)

    tasks.release_stuck_leases()

    first.refresh_from_db()
    assert first.lease_token == ""
    assert _claim(third) is not None
    # The killed worker's mailbox now waits for a free slot like any other.
    assert _claim(first) is None


def test_a_stopped_mailbox_holds_no_slot(db):
    first, second, third = _mailboxes(3)
    services.connection_stop(connection=first)

    assert _claim(second) is not None
    assert _claim(third) is not None


def test_a_forced_sync_also_waits_for_a_free_slot(db):
    first, second, third = _mailboxes(3)
    _claim(first)
    _claim(second)

    assert services.connection_claim(pk=third.pk, force=True) is None


def test_a_cap_of_zero_means_no_limit(db, settings):
    settings.MAILSYNC_MAX_CONNECTIONS_PER_HOST = 0
    mailboxes = _mailboxes(5)

    assert all(_claim(mailbox) is not None for mailbox in mailboxes)


def test_big_providers_limit_per_account_so_their_servers_are_not_capped(db):
    # Gmail allows about 15 connections per account; one sync per mailbox uses one. A cap on
    # imap.gmail.com would make every firm's Gmail mailboxes wait for each other.
    gmail = _mailboxes(3, host="imap.gmail.com")

    assert all(_claim(mailbox) is not None for mailbox in gmail)
    assert services.host_connection_cap("outlook.office365.com") == 0
    assert services.host_connection_cap(HOST) == 2


def test_one_mailbox_is_still_synced_by_one_worker_at_a_time(db):
    mailbox = _mailboxes(1)[0]

    assert _claim(mailbox) is not None
    assert _claim(mailbox) is None


# --- real concurrency: separate database connections racing on PostgreSQL ----------------

postgresql_only = only_on_postgresql("row locks are PostgreSQL's; SQLite runs one writer at a time")


def _claim_in_own_connection(pk: int, results: dict, barrier: threading.Barrier | None = None):
    try:
        if barrier is not None:
            barrier.wait()
        results[pk] = services.connection_claim(pk=pk) is not None
    finally:
        db_connection.close()  # this thread's own connection


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_claim_on_the_same_server_waits_for_a_claim_in_progress(settings):
    settings.MAILSYNC_MAX_CONNECTIONS_PER_HOST = 1
    first, second = _mailboxes(2)
    results: dict[int, bool] = {}
    with transaction.atomic():
        # Claimed, but not committed yet: a plain count from another connection would not
        # see this lease and would let the second mailbox in.
        assert _claim(first) is not None
        other = threading.Thread(target=_claim_in_own_connection, args=(second.pk, results))
        other.start()
        other.join(timeout=1)  # it is waiting for this transaction's locks
    other.join()

    assert results == {second.pk: False}
    assert MailboxConnection.objects.filter(host=HOST, lease_until__isnull=False).count() == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_one_server_never_exceed_its_cap():
    for round_number in range(10):
        mailboxes = _mailboxes(5, host=f"race{round_number}.hosted.test")
        results: dict[int, bool] = {}
        barrier = threading.Barrier(len(mailboxes))
        workers = [
            threading.Thread(target=_claim_in_own_connection, args=(m.pk, results, barrier))
            for m in mailboxes
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

        assert sorted(results.values()) == [False, False, False, True, True], round_number


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_different_servers_each_get_their_own_slots():
    hosts = ["a.hosted.test", "b.hosted.test", "c.hosted.test"]
    mailboxes = [m for host in hosts for m in _mailboxes(2, host=host)]
    results: dict[int, bool] = {}
    barrier = threading.Barrier(len(mailboxes))
    workers = [
        threading.Thread(target=_claim_in_own_connection, args=(m.pk, results, barrier))
        for m in mailboxes
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert all(results.values()) and len(results) == 6
