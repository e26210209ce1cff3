"""sync.labels_excluded against a real Dovecot: mail sitting in folders that are not synced."""

from __future__ import annotations

import pytest

from mailsync import services
from mailsync.adapters import ImapMailbox
from mailsync.engine import mailbox_sync
from mailsync.models import MailboxConnection, MailboxFolder, Message
from mailsync.selectors import mailbox_trouble
from tests.mailsync.factories import (  # noqa: F401
    MailboxConnectionFactory,
    MailboxFolderFactory,
    connect_mailbox,
    fernet_key,
)
from tests.servers.dovecot_fixtures import MailboxUser

pytestmark = pytest.mark.django_db(transaction=False)


def _connect(firm, user: MailboxUser) -> MailboxConnection:
    return connect_mailbox(firm, user)


def _mail(subject: str) -> bytes:
    return (
        f"From: client@client.test\r\nTo: me@firm.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n"
        "Date: Mon, 03 Mar 2025 10:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()


def _folder_with_mail(user: MailboxUser, name: str, count: int) -> None:
    user.server.create_folder(user.name, name)
    for n in range(count):
        user.server.append(user.name, _mail(f"{name} {n}"), folder=name)


def _excluded(firm) -> list[MailboxFolder]:
    """The folders the Problems pages report as switched off with mail in them."""
    return mailbox_trouble(firm=firm).excluded


def test_a_switched_off_folder_with_mail_is_reported_with_its_count(
    firm, mailbox_user, django_assert_num_queries
):
    _folder_with_mail(mailbox_user, "Clients", 3)
    connection = _connect(firm, mailbox_user)

    mailbox_sync(connection)

    folder = MailboxFolder.objects.get(connection=connection, name="Clients")
    assert not folder.enabled and folder.messages == 3
    owner = connection.owner
    with django_assert_num_queries(1):
        found = _excluded(firm)
        assert [(f.name, f.messages, f.connection.owner) for f in found] == [("Clients", 3, owner)]


def test_a_folder_switched_on_is_no_longer_reported(firm, mailbox_user):
    _folder_with_mail(mailbox_user, "Clients", 3)
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)

    services.folders_select(connection=connection, enabled_names={"INBOX", "Clients"})
    mailbox_sync(connection)

    assert Message.objects.count() == 3
    assert _excluded(firm) == []


def test_trash_spam_drafts_and_sent_folders_are_never_reported(firm, mailbox_user):
    for name in ("Trash", "Junk", "spam", "Sent Items", "Drafts", "INBOX.Deleted Items"):
        _folder_with_mail(mailbox_user, name, 1)
    _folder_with_mail(mailbox_user, "Clients", 1)
    connection = _connect(firm, mailbox_user)

    mailbox_sync(connection)

    assert MailboxFolder.objects.get(connection=connection, name="Trash").messages == 1
    assert [f.name for f in _excluded(firm)] == ["Clients"]


def test_folders_of_a_stopped_mailbox_are_not_reported(firm, mailbox_user):
    _folder_with_mail(mailbox_user, "Clients", 2)
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)
    assert _excluded(firm) != []

    services.connection_stop(connection=connection)

    assert _excluded(firm) == []


def test_a_failing_status_does_not_break_the_sync(firm, mailbox_user, monkeypatch):
    server = mailbox_user.server
    _folder_with_mail(mailbox_user, "Gone", 2)
    _folder_with_mail(mailbox_user, "Clients", 1)
    server.append(mailbox_user.name, _mail("In inbox"))
    real_list_folders = ImapMailbox.list_folders

    def list_then_delete(box: ImapMailbox) -> list[str]:
        # The member deletes the folder between our LIST and its STATUS.
        names = real_list_folders(box)
        other = server.imap_login(mailbox_user.name)
        try:
            assert other.delete("Gone")[0] == "OK"
        finally:
            other.logout()
        return names

    monkeypatch.setattr(ImapMailbox, "list_folders", list_then_delete)
    connection = _connect(firm, mailbox_user)

    report = mailbox_sync(connection)

    assert report.state == "ok" and report.new == 1
    counts = dict(
        MailboxFolder.objects.filter(connection=connection).values_list("name", "messages")
    )
    assert counts == {"INBOX": None, "Gone": None, "Clients": 1}
    assert [f.name for f in _excluded(firm)] == ["Clients"]


def test_a_folder_is_left_out_only_when_its_whole_name_is_a_non_client_one(firm):
    connection = MailboxConnectionFactory(firm=firm)
    for name in ("[Gmail]/Spam", "[Google Mail]/Sent Mail", "inbox/JUNK E-MAIL", "Bin"):
        MailboxFolderFactory(connection=connection, name=name, enabled=False, messages=3)
    for name in ("Sent to clients", "Old Trash Invoices", "[Gmail]/Clients", "Binders"):
        MailboxFolderFactory(connection=connection, name=name, enabled=False, messages=3)
    assert sorted(f.name for f in _excluded(firm)) == [
        "Binders",
        "Old Trash Invoices",
        "Sent to clients",
        "[Gmail]/Clients",
    ]
