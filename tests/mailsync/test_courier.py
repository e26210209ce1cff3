"""The sync's core cases against Courier-IMAP 5 and Courier POP3, a second real mail server
beside Dovecot (started from Debian's packages: tests/servers/courier.py)."""

from __future__ import annotations

import base64
import dataclasses
import time

import pytest

from mailsync import services
from mailsync.account_check import check_account
from mailsync.adapters import Credentials, ImapMailbox, Pop3Mailbox, ServerSettings
from mailsync.adapters.imap import encode_folder_name
from mailsync.engine import mailbox_sync
from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageClientLink
from portal.models import Document
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.mailsync.conftest import LOOPBACK
from tests.mailsync.factories import connect_mailbox, fernet_key  # noqa: F401
from tests.servers import courier_fixtures
from tests.servers.courier_fixtures import CourierUser

courier = courier_fixtures.courier
courier_user = courier_fixtures.courier_user

pytestmark = pytest.mark.django_db


def _connect(firm, user: CourierUser, *, kind: str = "imap") -> MailboxConnection:
    return connect_mailbox(firm, user, kind=kind)


def _mail(subject: str, message_id: str | None = None, *, sender: str = "client@client.test"):
    headers = [f"From: {sender}", "To: me@firm.test", f"Subject: {subject}"]
    if message_id:
        headers.append(f"Message-ID: <{message_id}>")
    headers += [
        "Date: Mon, 03 Mar 2025 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(headers) + "\r\n\r\nHello.\r\n").encode()


def _international(subject: str) -> bytes:
    """A message whose headers are raw UTF-8 (RFC 6532), as a modern client sends it."""
    return (
        "From: Ionuț Pop <client@client.test>\r\nTo: me@firm.test\r\n"
        f"Subject: {subject}\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nBună ziua, atașat găsiți factura.\r\n"
    ).encode()


@pytest.fixture
def client_contact(firm):
    client = ClientFactory(firm=firm, display_name="Birch Ltd")
    ContactAddressFactory(contact=ContactFactory(client=client), address="client@client.test")
    return client


def _settings(user: CourierUser, *, kind: str = "imap", **changes) -> ServerSettings:
    server = user.server
    port = server.imap_port if kind == "imap" else server.pop3_port
    return dataclasses.replace(
        # Courier answers a wrong password only after 5 seconds.
        ServerSettings(server.host, port, "none", user.name, timeout=15, guard=LOOPBACK),
        **changes,
    )


def test_it_imports_new_mail_then_only_what_arrived_since(firm, courier_user, client_contact):
    server = courier_user.server
    for n in (1, 2):
        server.append(courier_user.name, _mail(f"First {n}", f"first{n}@c.test"))
    connection = _connect(firm, courier_user)

    report = mailbox_sync(connection)
    assert (report.fetched, report.new) == (2, 2)
    assert mailbox_sync(connection).fetched == 0

    for n in range(5):
        server.append(courier_user.name, _mail(f"New {n}", f"new{n}@c.test"))
    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates) == (5, 5, 0)
    assert MessageClientLink.objects.filter(client=client_contact).count() == 7


def test_folders_with_dots_and_accents_are_listed_counted_and_synced(firm, courier_user):
    server = courier_user.server
    # Courier keeps folders under the INBOX. namespace, "." the separator, names in
    # modified UTF-7 on the wire.
    deep = encode_folder_name("INBOX.Clients.Cliënți 2025")
    server.create_folder(courier_user.name, "INBOX.Clients")
    server.create_folder(courier_user.name, deep)
    server.append(courier_user.name, _mail("Filed", "filed@c"), folder="INBOX.Clients")
    for n in range(3):
        server.append(courier_user.name, _mail(f"Deep {n}", f"deep{n}@c"), folder=deep)
    connection = _connect(firm, courier_user)
    mailbox_sync(connection)

    folders = dict(connection.folders.values_list("name", "messages"))
    assert folders == {"INBOX": None, "INBOX.Clients": 1, "INBOX.Clients.Cliënți 2025": 3}

    services.folders_select(
        connection=connection, enabled_names={"INBOX", "INBOX.Clients.Cliënți 2025"}
    )
    report = mailbox_sync(connection)

    assert report.new == 3
    assert sorted(Message.objects.values_list("subject", flat=True)) == [
        "Deep 0",
        "Deep 1",
        "Deep 2",
    ]


def test_attachments_on_courier_become_client_documents(firm, courier_user, client_contact):
    pdf = b"%PDF-1.4 statement " * 50
    raw = (
        b"From: client@client.test\r\nTo: me@firm.test\r\nSubject: Statement\r\n"
        b"Message-ID: <att@c>\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n"
        b"--b1\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="statement.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )

    raw += base64.encodebytes(pdf).replace(b"\n", b"\r\n") + b"\r\n--b1--\r\n"
    courier_user.server.append(courier_user.name, raw)

    report = mailbox_sync(_connect(firm, courier_user))

    assert report.documents == 1
    document = Document.objects.get(client=client_contact)
    assert document.original_name == "statement.pdf" and document.size == len(pdf)


def test_mail_delivered_straight_into_the_maildir_keeps_syncing_while_uidvalidity_changes(
    firm, courier_user, client_contact
):
    """Courier keeps a folder's UIDs only once a client opens it read-write; the portal only
    EXAMINEs, so with mail delivered by a local delivery agent each session sees a new
    UIDVALIDITY. The sync must keep bringing in new mail, never duplicate, and say so."""
    server = courier_user.server
    connection = _connect(firm, courier_user)
    delivered = 0
    for run in range(8):
        server.deliver(courier_user.name, _mail(f"Delivered {run}", f"d{run}@c.test"))
        delivered += 1
        time.sleep(1.05)  # Courier's stand-in UIDVALIDITY moves with the clock's seconds
        mailbox_sync(connection)
        assert Message.objects.count() == delivered, f"run {run}"

    assert MessageClientLink.objects.filter(client=client_contact).count() == delivered
    folder = connection.folders.get(name="INBOX")
    assert folder.uidvalidity_unstable_since is not None
    connection.refresh_from_db()
    assert connection.health == MailboxConnection.Health.OK


def test_pop3_brings_internationalised_messages_whole(firm, courier_user, client_contact):
    server = courier_user.server
    for n in range(3):
        server.deliver(courier_user.name, _international(f"Factură {n}"))

    report = mailbox_sync(_connect(firm, courier_user, kind="pop3"))

    assert report.new == 3
    subjects = sorted(Message.objects.values_list("subject", flat=True))
    assert subjects == ["Factură 0", "Factură 1", "Factură 2"]
    assert not Message.objects.filter(subject__icontains="Unicode").exists()


def test_pop3_second_sync_imports_nothing_and_new_mail_once(firm, courier_user):
    server = courier_user.server
    server.deliver(courier_user.name, _mail("One", "p1@c"))
    connection = _connect(firm, courier_user, kind="pop3")
    assert mailbox_sync(connection).new == 1
    assert mailbox_sync(connection).fetched == 0

    server.deliver(courier_user.name, _mail("Two", "p2@c"))
    report = mailbox_sync(connection)

    assert (report.fetched, report.new) == (1, 1)
    assert MailboxFolder.objects.get(connection=connection).state == "idle"


def test_imap_enables_utf8_where_courier_offers_it(courier_user):
    with ImapMailbox(_settings(courier_user), Credentials(password=courier_user.password)) as box:
        assert box.utf8
        assert box.list_folders() == ["INBOX"]


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_account_check_passes_with_the_right_password(courier_user, kind):
    check = check_account(
        _settings(courier_user, kind=kind),
        Credentials(password=courier_user.password),
        protocol=kind,
    )

    assert check.ok, check.error


@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_account_check_says_the_password_is_wrong(courier_user, kind):
    check = check_account(
        _settings(courier_user, kind=kind), Credentials(password="not-it"), protocol=kind
    )

    assert not check.ok
    assert check.error.code == "sync.auth_failed"
    assert check.error.step == "login"


def test_a_password_changed_on_courier_stops_the_sync_until_reauthentication(firm, courier_user):
    connection = _connect(firm, courier_user)
    mailbox_sync(connection)

    courier_user.server.set_password(courier_user.name, "changed-by-the-admin")
    mailbox_sync(connection)

    connection.refresh_from_db()
    assert connection.problem_code == "sync.auth_failed"
    assert connection.health != MailboxConnection.Health.OK


def test_imap_starttls_on_courier(courier_user):
    settings = _settings(courier_user, security="starttls", ca_file=courier_user.server.ca_file)

    with ImapMailbox(settings, Credentials(password=courier_user.password)) as box:
        assert box.list_folders() == ["INBOX"]


def test_pop3_starttls_on_courier(courier_user):
    courier_user.server.deliver(courier_user.name, _mail("Secure", "s@c"))
    settings = _settings(
        courier_user, kind="pop3", security="starttls", ca_file=courier_user.server.ca_file
    )

    with Pop3Mailbox(settings, Credentials(password=courier_user.password)) as box:
        assert len(box.uidl()) == 1
