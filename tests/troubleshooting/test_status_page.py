"""The public status page: workers, sending and mailbox sync, and when it answers 503."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mailsync.models import MailboxConnection
from portal.blobs import BlobStoreUnavailable, blob_put
from portal.models import Heartbeat
from tests.factories import ClientFactory
from tests.mailsync.factories import MailboxConnectionFactory, fernet_key  # noqa: F401
from tests.troubleshooting.test_problem_pages import _delivery

STATUS = reverse("troubleshooting:status")


@pytest.fixture
def workers_alive(db):
    Heartbeat.objects.create(name="worker", last_seen=timezone.now())


def _json(client):
    response = client.get(STATUS, {"format": "json"})
    return response.status_code, response.json()


@pytest.mark.usefixtures("workers_alive")
def test_sending_that_mostly_fails_makes_the_page_answer_503(client, firm):
    customer = ClientFactory(firm=firm)
    _delivery(customer, "ok@birch.test", status="delivered")
    for n in range(2):
        _delivery(customer, f"broken{n}@birch.test", status="failed")
    code, body = _json(client)
    assert code == 503
    assert (body["sending_works"], body["sent_last_hour"], body["failed_last_hour"]) == (
        False,
        1,
        2,
    )
    assert "Failing" in client.get(STATUS).content.decode()


@pytest.mark.usefixtures("workers_alive")
def test_sending_that_mostly_works_is_healthy(client, firm):
    customer = ClientFactory(firm=firm)
    for n in range(2):
        _delivery(customer, f"ok{n}@birch.test", status="delivered")
    _delivery(customer, "broken@birch.test", status="failed")
    code, body = _json(client)
    assert (code, body["sending_works"]) == (200, True)


@pytest.mark.usefixtures("workers_alive")
def test_mailbox_sync_health_counts_failing_mailboxes_and_the_longest_wait(client, firm):
    now = timezone.now()
    MailboxConnectionFactory(firm=firm, last_success_at=now - timedelta(minutes=12))
    MailboxConnectionFactory(firm=firm, last_success_at=now - timedelta(minutes=2))
    # A wrong password is that mailbox's own problem: counted, but not a platform failure.
    MailboxConnectionFactory(
        firm=firm,
        problem_code="sync.auth_failed",
        last_success_at=now - timedelta(days=3),
    )
    code, body = _json(client)
    assert code == 200
    assert (body["mailboxes_syncing"], body["mailboxes_failing"]) == (3, 1)
    assert 12 * 60 <= body["oldest_sync_lag_seconds"] < 13 * 60
    page = client.get(STATUS).content.decode()
    assert "1 of 3 mailboxes needs its owner's attention" in page
    assert "longest wait since a sync: 12 minutes" in page


@pytest.mark.usefixtures("workers_alive")
def test_sync_that_stalled_for_every_healthy_mailbox_answers_503(client, firm):
    MailboxConnectionFactory(firm=firm, last_success_at=timezone.now() - timedelta(hours=2))
    code, body = _json(client)
    assert (code, body["sync_works"]) == (503, False)


@pytest.mark.usefixtures("workers_alive")
def test_a_stopped_mailbox_does_not_count(client, firm):
    MailboxConnectionFactory(
        firm=firm,
        intent=MailboxConnection.Intent.STOPPED,
        last_success_at=timezone.now() - timedelta(days=30),
    )
    code, body = _json(client)
    assert (code, body["mailboxes_syncing"], body["oldest_sync_lag_seconds"]) == (200, 0, None)


@pytest.mark.usefixtures("workers_alive")
def test_mail_the_store_could_not_take_shows_until_a_write_works_again(
    client, db, settings, tmp_path
):
    working = settings.STORAGES
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_bytes(b"")
    settings.STORAGES = {
        **working,
        "blobs": {**working["blobs"], "OPTIONS": {"location": str(not_a_folder)}},
    }
    with pytest.raises(BlobStoreUnavailable):
        blob_put(b"Subject: lost?\r\n\r\nNot stored.\r\n")

    code, body = _json(client)
    assert (code, body["storing_works"]) == (503, False)
    assert "could not store mail at" in client.get(STATUS).content.decode()

    settings.STORAGES = working
    blob_put(b"Subject: again\r\n\r\nStored.\r\n")

    code, body = _json(client)
    assert (code, body["storing_works"], body["store_failed_at"]) == (200, True, None)
