"""Dedupe against a real Dovecot: one message is stored once, however many mailboxes hold it,
and different messages are never merged because they share a Message-ID or look alike."""

from __future__ import annotations

import base64
import datetime

import pytest
from django.utils import timezone

from mailsync.engine import mailbox_sync
from mailsync.models import MailboxConnection, Message, MessageSource
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.mailsync.factories import connect_mailbox, fernet_key  # noqa: F401
from tests.servers.dovecot_fixtures import MailboxUser

pytestmark = pytest.mark.django_db(transaction=False)


def _connect(firm, user: MailboxUser, *, kind: str = "imap") -> MailboxConnection:
    return connect_mailbox(firm, user, kind=kind)


def _second_member(dovecot, firm) -> MailboxUser:
    name = f"second{id(firm)}"
    dovecot.add_user(name, "pw-second")
    return MailboxUser(name, "pw-second", dovecot)


def _scanner_report(subject: str, date: str, attachment: bytes) -> bytes:
    """What a scanner that stamps every message with one fixed Message-ID sends."""
    encoded = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (
        "From: Office Scanner <scanner@client.test>\r\nTo: me@firm.test\r\n"
        f"Subject: {subject}\r\nDate: {date}\r\n"
        "Message-ID: <scan@scanner.local>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="s"\r\n\r\n'
        "--s\r\nContent-Type: text/plain\r\n\r\nScanned.\r\n"
        "--s\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="scan.pdf"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--s--\r\n"
    ).encode()


FIRST_SCAN = _scanner_report("Scan 1", "Mon, 03 Mar 2025 10:00:00 +0000", b"%PDF first page")
SECOND_SCAN = _scanner_report("Scan 2", "Tue, 04 Mar 2025 11:30:00 +0000", b"%PDF second page")


@pytest.fixture
def scanner_client(firm):
    client = ClientFactory(firm=firm, display_name="Scanner Ltd")
    ContactAddressFactory(contact=ContactFactory(client=client), address="scanner@client.test")
    return client


def test_two_messages_sharing_a_message_id_in_one_mailbox_are_both_kept(
    firm, mailbox_user, scanner_client
):
    for raw in (FIRST_SCAN, SECOND_SCAN):
        mailbox_user.server.append(mailbox_user.name, raw)

    report = mailbox_sync(_connect(firm, mailbox_user))

    assert (report.new, report.duplicates) == (2, 0)
    assert sorted(Message.objects.values_list("subject", flat=True)) == ["Scan 1", "Scan 2"]
    # Each keeps its own attachment on the client.
    assert report.documents == 2


def test_two_messages_sharing_a_message_id_in_two_members_mailboxes_are_both_kept(
    firm, dovecot, mailbox_user, scanner_client
):
    second = _second_member(dovecot, firm)
    mailbox_user.server.append(mailbox_user.name, FIRST_SCAN)
    dovecot.append(second.name, SECOND_SCAN)

    mailbox_sync(_connect(firm, mailbox_user))
    report = mailbox_sync(_connect(firm, second))

    assert (report.new, report.duplicates) == (1, 0)
    assert Message.objects.count() == 2


def test_the_same_message_re_encoded_by_another_server_is_stored_once(firm, dovecot, mailbox_user):
    # As the sender's server wrote it: raw UTF-8 header, 8-bit body.
    original = (
        "From: Jürgen Müller <J.Mueller@Muellerhaus.test>\r\nTo: me@firm.test\r\n"
        "Subject: Quittungen für März \u2013 Café\r\nDate: Tue, 4 Mar 2025 09:15:00 +0100\r\n"
        "Message-ID: <receipts@muellerhaus.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Anbei die Quittungen für März.\r\n"
    ).encode()
    # As another hop re-encoded it: encoded words, a folded Subject, the Date in UTC with
    # another spelling, the address in other letters, a base64 body and trace headers.
    body = base64.b64encode("Anbei die Quittungen für März.\r\n".encode()).decode()
    reencoded = (
        "Received: from relay.test by mx.firm.test; Tue, 4 Mar 2025 08:16:00 +0000\r\n"
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j.mueller@muellerhaus.test>\r\n"
        "To: me@firm.test\r\n"
        "Subject: =?utf-8?q?Quittungen_f=C3=BCr_M=C3=A4rz?=\r\n =?utf-8?b?IOKAkyBDYWbDqQ==?=\r\n"
        "Date: Tue, 04 Mar 2025 08:15:00 GMT\r\n"
        "Message-ID: <receipts@muellerhaus.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="UTF-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{body}\r\n"
    ).encode()
    second = _second_member(dovecot, firm)
    mailbox_user.server.append(mailbox_user.name, original)
    dovecot.append(second.name, reencoded)

    mailbox_sync(_connect(firm, mailbox_user))
    report = mailbox_sync(_connect(firm, second))

    assert (report.new, report.duplicates) == (0, 1)
    message = Message.objects.get()
    assert message.subject == "Quittungen für März \u2013 Café"
    assert MessageSource.objects.filter(message=message).count() == 2


def _wrapper(n: int) -> bytes:
    """What Courier's POP3 put in place of each message it could not send as ASCII: no
    Message-ID, no Date, the same text every time."""
    del n  # nine of them, byte for byte the same
    return (
        b"From: Courier mail server <postmaster@mail.test>\r\nTo: me@firm.test\r\n"
        b"Subject: Cannot display Unicode content\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"This E-mail message contains Unicode content that cannot be displayed.\r\n"
    )


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_equal_messages_without_message_id_are_one_each_per_server_message(
    firm, mailbox_user, kind
):
    for n in range(9):
        mailbox_user.server.append(mailbox_user.name, _wrapper(n))
    connection = _connect(firm, mailbox_user, kind=kind)

    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates) == (9, 9, 0)
    assert Message.objects.count() == 9
    assert MessageSource.objects.values("message").distinct().count() == 9


def test_equal_messages_without_message_id_are_not_stored_again_when_the_folder_is_reread(
    firm, mailbox_user
):
    for n in range(3):
        mailbox_user.server.append(mailbox_user.name, _wrapper(n))
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)

    mailbox_user.server.set_uidvalidity(mailbox_user.name, "INBOX", 777)
    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates) == (3, 0, 3)
    assert Message.objects.count() == 3


def test_a_message_without_message_id_in_two_members_mailboxes_is_stored_once(
    firm, dovecot, mailbox_user
):
    second = _second_member(dovecot, firm)
    mailbox_user.server.append(mailbox_user.name, _wrapper(0))
    dovecot.append(second.name, _wrapper(0))

    mailbox_sync(_connect(firm, mailbox_user))
    report = mailbox_sync(_connect(firm, second))

    assert (report.new, report.duplicates) == (0, 1)
    assert Message.objects.count() == 1


NO_DATE = (
    b"Received: from a.test by mx.firm.test; Mon, 03 Mar 2025 10:00:05 +0000\r\n"
    b"Received: from b.test by a.test; Mon, 03 Mar 2025 09:59:00 +0000\r\n"
    b"From: client@client.test\r\nTo: me@firm.test\r\nSubject: No date\r\n"
    b"Message-ID: <nodate@client.test>\r\n\r\nWhen was this sent?\r\n"
)


def test_a_message_without_date_shows_the_servers_arrival_time_flagged(firm, mailbox_user):
    arrived = (timezone.now() - datetime.timedelta(days=3)).replace(microsecond=0)
    mailbox_user.server.append(mailbox_user.name, NO_DATE, date=arrived)

    mailbox_sync(_connect(firm, mailbox_user))

    message = Message.objects.get()
    assert (message.date, message.date_source) == (arrived, Message.DateSource.SERVER)


def test_a_pop3_message_without_date_shows_its_newest_received_date_flagged(firm, mailbox_user):
    mailbox_user.server.append(mailbox_user.name, NO_DATE)

    mailbox_sync(_connect(firm, mailbox_user, kind="pop3"))

    message = Message.objects.get()
    assert message.date == datetime.datetime(2025, 3, 3, 10, 0, 5, tzinfo=datetime.UTC)
    assert message.date_source == Message.DateSource.RECEIVED
