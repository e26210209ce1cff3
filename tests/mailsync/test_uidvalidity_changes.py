"""A folder whose UIDVALIDITY keeps changing is never given up on: it is read by date window,
the member is told, and the folder is trusted again once the server is stable."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from freezegun import freeze_time

from mailsync.engine import MAX_RESETS, RESET_WINDOW, STABLE_RUNS_TO_TRUST, mailbox_sync
from mailsync.models import MailboxFolder, Message
from tests.mailsync.factories import connect_mailbox, fernet_key  # noqa: F401

pytestmark = pytest.mark.django_db


def _connect(firm, user):
    return connect_mailbox(firm, user)


def _mail(n: int) -> bytes:
    return (
        f"From: client@client.test\r\nTo: me@firm.test\r\nSubject: M{n}\r\n"
        f"Message-ID: <uv{n}@client.test>\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n\r\nHi.\r\n"
    ).encode()


def _renumber_and_sync(user, connection, value: int, new_message: int | None = None) -> None:
    if new_message is not None:
        user.server.append(user.name, _mail(new_message))
    user.server.set_uidvalidity(user.name, "INBOX", value)
    mailbox_sync(connection)


def _inbox(connection) -> MailboxFolder:
    return MailboxFolder.objects.get(connection=connection, name="INBOX")


def test_a_folder_renumbered_again_and_again_keeps_syncing_new_mail(firm, mailbox_user):
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)

    for n in range(MAX_RESETS + 3):
        _renumber_and_sync(mailbox_user, connection, 1000 + n, new_message=n)
        assert Message.objects.count() == n + 1

    folder = _inbox(connection)
    assert folder.uidvalidity_unstable_since is not None
    assert folder.uidvalidity == 1000 + MAX_RESETS + 2


def test_changes_spread_over_days_never_mark_the_folder_unstable(firm, mailbox_user):
    connection = _connect(firm, mailbox_user)
    start = timezone.now()
    with freeze_time(start) as clock:
        mailbox_sync(connection)
        for n in range(MAX_RESETS * 2):
            clock.tick(RESET_WINDOW + datetime.timedelta(minutes=1))
            _renumber_and_sync(mailbox_user, connection, 2000 + n)

    folder = _inbox(connection)
    assert folder.uidvalidity_unstable_since is None
    assert folder.reset_count == 1


def test_an_unstable_folder_is_trusted_again_after_stable_runs(firm, mailbox_user):
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)
    for n in range(MAX_RESETS + 1):
        _renumber_and_sync(mailbox_user, connection, 3000 + n)
    assert _inbox(connection).uidvalidity_unstable_since is not None

    for _ in range(STABLE_RUNS_TO_TRUST):
        mailbox_sync(connection)

    folder = _inbox(connection)
    assert folder.uidvalidity_unstable_since is None
    assert folder.reset_count == 0
