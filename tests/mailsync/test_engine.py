"""The sync engine against a real Dovecot: what ends up on clients, and what never breaks."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from mailsync import services
from mailsync.engine import mailbox_sync
from mailsync.errors import AUTH_FAILED, CONNECTION
from mailsync.models import (
    MailboxConnection,
    MailboxFolder,
    Message,
    MessageAttachment,
    MessageClientLink,
    MessageSource,
)
from portal.models import Document
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, UserFactory
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.servers.dovecot_fixtures import MailboxUser

pytestmark = pytest.mark.django_db(transaction=False)


def _connect(firm, user: MailboxUser, *, owner=None, kind="imap") -> MailboxConnection:
    server = user.server
    return services.connection_create(
        firm=firm,
        owner=owner or UserFactory(),
        kind=kind,
        email_address=f"{user.name}@firm.test",
        host=server.host,
        port=server.imap_port if kind == "imap" else server.pop3_port,
        security="none",
        username=user.name,
        password=user.password,
    )


def _mail(
    subject: str,
    *,
    sender: str = "Client <client@client.test>",
    to: str = "me@firm.test",
    message_id: str | None = None,
    extra: str = "",
    body: str = "Hello.",
) -> bytes:
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    if message_id:
        headers.append(f"Message-ID: <{message_id}>")
    headers += ["Date: Mon, 03 Mar 2025 10:00:00 +0000", "MIME-Version: 1.0"]
    if extra:
        headers.append(extra)
    if "Content-Type" not in extra:
        headers.append("Content-Type: text/plain; charset=utf-8")
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


def _with_attachment(subject: str, message_id: str, payload: bytes, name: str) -> bytes:
    import base64

    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (
        "From: client@client.test\r\nTo: me@firm.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
        "Date: Mon, 03 Mar 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        f"--b1\r\nContent-Type: application/pdf\r\n"
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{encoded}\r\n--b1--\r\n"
    ).encode()


@pytest.fixture
def client_contact(firm):
    client = ClientFactory(firm=firm, display_name="Birch Ltd")
    ContactAddressFactory(contact=ContactFactory(client=client), address="Client@Client.test")
    return client


def test_it_imports_new_mail_then_only_what_arrived_since(firm, mailbox_user, client_contact):
    server = mailbox_user.server
    for n in (1, 2):
        server.append(mailbox_user.name, _mail(f"First {n}", message_id=f"first{n}@c.test"))
    connection = _connect(firm, mailbox_user)

    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates, report.linked) == (2, 2, 0, 2)
    connection.refresh_from_db()
    assert connection.health == "ok" and connection.messages_imported == 2
    assert connection.last_success_at is not None
    # Read-only: the member's mail stays unread on the server.
    assert "\\Seen" not in server.flags(mailbox_user.name, 1)

    server.append(mailbox_user.name, _mail("Later", message_id="later@c.test"))
    report = mailbox_sync(connection)
    assert (report.fetched, report.new) == (1, 1)
    assert mailbox_sync(connection).fetched == 0
    assert set(
        MessageClientLink.objects.filter(client=client_contact).values_list(
            "message__subject", flat=True
        )
    ) == {"First 1", "First 2", "Later"}


def test_it_skips_mail_older_than_the_initial_window(firm, mailbox_user, settings):
    settings.MAILSYNC_INITIAL_DAYS = 30
    old = timezone.now() - datetime.timedelta(days=200)
    mailbox_user.server.append(mailbox_user.name, _mail("Ancient", message_id="a@c"), date=old)
    mailbox_user.server.append(mailbox_user.name, _mail("Recent", message_id="r@c"))

    mailbox_sync(_connect(firm, mailbox_user))

    assert list(Message.objects.values_list("subject", flat=True)) == ["Recent"]


def test_it_backfills_a_folder_when_the_member_switches_it_on(firm, mailbox_user):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Clients")
    server.append(mailbox_user.name, _mail("Filed", message_id="filed@c"), folder="Clients")
    connection = _connect(firm, mailbox_user)

    mailbox_sync(connection)
    folder = MailboxFolder.objects.get(connection=connection, name="Clients")
    assert not folder.enabled and not Message.objects.exists()

    services.folders_select(connection=connection, enabled_names={"INBOX", "Clients"})
    report = mailbox_sync(connection)

    assert report.new == 1
    assert Message.objects.get().subject == "Filed"
    folder.refresh_from_db()
    assert folder.state == "idle" and folder.last_uid == 1


def test_it_rereads_a_folder_after_uidvalidity_changes_without_duplicates(firm, mailbox_user):
    server = mailbox_user.server
    for n in (1, 2):
        server.append(mailbox_user.name, _mail(f"M{n}", message_id=f"uv{n}@c"))
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)

    server.set_uidvalidity(mailbox_user.name, "INBOX", 4242)
    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates) == (2, 0, 2)
    assert Message.objects.count() == 2
    folder = connection.folders.get(name="INBOX")
    assert (folder.uidvalidity, folder.reset_count) == (4242, 1)
    assert MessageSource.objects.filter(folder=folder).count() == 2


def test_the_same_message_in_two_members_mailboxes_appears_once(firm, dovecot, client_contact):
    members = []
    for n in (1, 2):
        name = f"twin{n}x{id(firm)}"
        dovecot.add_user(name, "pw-twin")
        members.append(MailboxUser(name, "pw-twin", dovecot))
        dovecot.append(name, _mail("Shared thread", message_id="shared@client.test"))
    for member in members:
        mailbox_sync(_connect(firm, member))

    assert Message.objects.count() == 1
    assert MessageSource.objects.count() == 2
    assert MessageClientLink.objects.filter(client=client_contact).count() == 1


def test_attachments_become_client_documents_stored_once(firm, mailbox_user, client_contact):
    pdf = b"%PDF-1.4 invoice " * 100
    server = mailbox_user.server
    server.append(mailbox_user.name, _with_attachment("Inv", "att1@c", pdf, "../../etc/x.pdf"))
    server.append(mailbox_user.name, _with_attachment("Again", "att2@c", pdf, "x.pdf"))

    report = mailbox_sync(_connect(firm, mailbox_user))

    assert report.documents == 1
    document = Document.objects.get(client=client_contact)
    assert document.source == "email" and document.original_name == "x.pdf"
    with document.file.open("rb") as stored:
        assert stored.read() == pdf
    assert MessageAttachment.objects.filter(document=document).count() == 2


def test_a_20_mb_attachment_is_stored(firm, mailbox_user, client_contact):
    big = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    mailbox_user.server.append(mailbox_user.name, _with_attachment("Big", "big@c", big, "b.pdf"))

    report = mailbox_sync(_connect(firm, mailbox_user))

    assert (report.new, report.documents, report.kept_raw) == (1, 1, 0)
    assert Document.objects.get(client=client_contact).size == len(big)


def test_a_wrong_password_stops_retries_until_the_member_reauthenticates(firm, mailbox_user):
    server = mailbox_user.server
    server.append(mailbox_user.name, _mail("Before", message_id="before@c"))
    connection = _connect(firm, mailbox_user)
    mailbox_sync(connection)

    server.set_password(mailbox_user.name, "a-new-password")
    server.append(mailbox_user.name, _mail("During", message_id="during@c"))
    report = mailbox_sync(connection)

    connection.refresh_from_db()
    assert report.state == "needs_reauth"
    assert connection.problem_code == AUTH_FAILED and connection.next_attempt_at is None
    assert "pw-" not in connection.problem_detail
    assert connection.pk not in services.connections_due()

    services.connection_reauthenticate(connection=connection, password="a-new-password")
    assert connection.pk in services.connections_due()
    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.state) == (1, 1, "ok")
    assert sorted(Message.objects.values_list("subject", flat=True)) == ["Before", "During"]


class _Killed(Exception):
    pass


def test_a_worker_killed_between_batches_loses_and_duplicates_nothing(firm, mailbox_user, settings):
    settings.MAILSYNC_BATCH_SIZE = 2
    for n in range(5):
        mailbox_user.server.append(mailbox_user.name, _mail(f"K{n}", message_id=f"k{n}@c"))
    connection = _connect(firm, mailbox_user)

    def kill_after_first_batch(folder: str, done: int, total: int) -> None:
        raise _Killed

    with pytest.raises(_Killed):
        mailbox_sync(connection, on_batch=kill_after_first_batch)
    assert Message.objects.count() == 2

    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates) == (3, 3, 0)
    assert Message.objects.count() == 5 and MessageSource.objects.count() == 5


def test_a_server_gone_mid_sync_backs_off_and_the_next_run_catches_up(firm, mailbox_user, settings):
    settings.MAILSYNC_BATCH_SIZE = 2
    # The sync reads a few batches ahead of what it commits: enough mail that the server
    # goes away while some is still unread.
    total = 20
    for n in range(total):
        mailbox_user.server.append(mailbox_user.name, _mail(f"S{n}", message_id=f"s{n}@c"))
    connection = _connect(firm, mailbox_user)

    kicked = []

    def drop_the_connection(folder: str, done: int, total: int) -> None:
        # Dovecot disconnects the session after the first commit, as a restarting server
        # would.
        if not kicked:
            kicked.append(done)
            mailbox_user.server.doveadm("kick", mailbox_user.name)

    report = mailbox_sync(connection, on_batch=drop_the_connection)

    connection.refresh_from_db()
    assert report.state == "degraded" and connection.problem_code == CONNECTION
    assert connection.consecutive_failures == 1
    assert connection.next_attempt_at > timezone.now()
    # What was fetched before the server went away is kept (the batches read ahead while
    # the first one committed too), not the whole mailbox.
    kept = Message.objects.count()
    assert 2 <= kept < total

    report = mailbox_sync(connection)
    assert (report.new, report.duplicates, report.state) == (total - kept, 0, "ok")
    assert Message.objects.count() == total and MessageSource.objects.count() == total


def test_malformed_mime_is_kept_raw_and_flagged_without_stopping_the_run(firm, mailbox_user):
    server = mailbox_user.server
    broken = (
        b"From: =?utf-8?q?broken <\r\nTo: ,,,@@@\r\nSubject: =?x-unknown?b?////?=\r\n"
        b"Date: yesterday-ish\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"
    )
    server.append(mailbox_user.name, broken)
    server.append(mailbox_user.name, _mail("Fine", message_id="fine@c"))

    report = mailbox_sync(_connect(firm, mailbox_user))

    assert (report.new, report.kept_raw, report.state) == (2, 1, "ok")
    flagged = Message.objects.get(parse_error=True)
    assert bytes(flagged.raw).replace(b"\r\n", b"\n") == broken.replace(b"\r\n", b"\n")


def test_pop3_mail_is_imported_once_by_uidl(firm, mailbox_user, client_contact):
    server = mailbox_user.server
    server.append(mailbox_user.name, _mail("Pop one", message_id="p1@c"))
    connection = _connect(firm, mailbox_user, kind="pop3")

    assert mailbox_sync(connection).new == 1
    server.append(mailbox_user.name, _mail("Pop two", message_id="p2@c"))
    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.state) == (1, 1, "ok")
    assert server.message_count(mailbox_user.name) == 2  # nothing deleted
    assert MessageClientLink.objects.filter(client=client_contact).count() == 2


def test_it_relinks_mail_when_a_contact_address_is_added_later(firm, mailbox_user):
    mailbox_user.server.append(
        mailbox_user.name, _mail("Early", sender="new@later.test", message_id="e@c")
    )
    mailbox_sync(_connect(firm, mailbox_user))
    services.addresses_relink_changed()  # records today's addresses
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="NEW@later.test")

    assert services.addresses_relink_changed() == 1

    assert MessageClientLink.objects.get().client == client


def test_transient_failures_back_off_with_a_cap(firm):
    from mailsync.errors import SyncError
    from tests.mailsync.factories import MailboxConnectionFactory

    connection = MailboxConnectionFactory(firm=firm)
    error = SyncError(CONNECTION, transient=True, detail="[UNAVAILABLE] try later", step="login")
    delays = []
    for _ in range(12):
        services.connection_record_failure(connection=connection, error=error)
        delays.append((connection.next_attempt_at - timezone.now()).total_seconds())

    assert connection.health == "degraded" and connection.consecutive_failures == 12
    assert 40 < delays[0] < 80 and delays[1] > delays[0]
    assert max(delays) <= 3600 * 1.2  # the slow probe: never later than about an hour


def test_credentials_rotate_to_the_newest_key(firm, settings, fernet_key):  # noqa: F811
    from cryptography.fernet import Fernet

    from mailsync import crypto
    from tests.mailsync.factories import MailboxConnectionFactory

    connection = MailboxConnectionFactory(firm=firm, secret=crypto.encrypt("s3cret"))
    new_key = Fernet.generate_key().decode()
    settings.MAILSYNC_FERNET_KEYS = [new_key, fernet_key]

    assert services.credentials_rotate() == 1

    settings.MAILSYNC_FERNET_KEYS = [new_key]
    connection.refresh_from_db()
    assert crypto.decrypt(connection.secret) == "s3cret"


# Connection and folder bookkeeping (15 statements, the folder's final state written with a
# lease check in a savepoint) and one batch (10): the lease check (a locked read of the
# connection; a run holding a lease also renews it), the batch's keys already known, the
# messages, their sources, the client index, the links, the cursor, the progress, and the
# savepoint around the batch (none around its INSERT: see engine._Collided). PostgreSQL
# adds a check for lz4 once per run and a SET LOCAL per batch (see engine._insert_messages),
# and stores the messages as a SELECT of their ids from the sequence and a COPY (see
# engine._copy_messages). Two more, whatever the batch: the silent-gap check reads the
# folder's source rows and records its counts.
QUERIES_FOR_ONE_BATCH = {"sqlite": 27, "postgresql": 30}


@pytest.mark.parametrize("count", [2, 12])
def test_a_batch_is_stored_in_statements_that_do_not_grow_with_its_size(
    firm, mailbox_user, client_contact, settings, count
):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    settings.MAILSYNC_BATCH_SIZE = 50
    for n in range(count):
        mailbox_user.server.append(mailbox_user.name, _mail(f"Q{n}", message_id=f"q{n}@c"))
    connection = _connect(firm, mailbox_user)

    with CaptureQueriesContext(db) as queries:
        report = mailbox_sync(connection)

    assert (report.new, report.linked) == (count, count)
    assert len(queries) == QUERIES_FOR_ONE_BATCH[db.vendor]
