"""The bounce mailbox, read over IMAP from a real Dovecot on loopback.

The DSNs are real ones from the shared corpus. Each is addressed to one of our deliveries the
way it would be in production: the final MTA prepends ``Delivered-To`` with the envelope
recipient, which is the delivery's VERP Return-Path; or, where a relay lost that, through the
original message's Message-ID quoted inside the report.
"""

from __future__ import annotations

import datetime
import imaplib
import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from invoicing.delivery.dsn_mailbox import (
    BounceMailboxError,
    MailboxSettings,
    bounce_mailbox_poll,
    fetch_response_messages,
)
from invoicing.delivery.models import BounceMailboxCursor, Delivery, DeliveryEvent
from invoicing.delivery.verp import new_verp_token, verp_address
from invoicing.models import Invoice
from tests.factories import ClientFactory, FirmFactory
from tests.servers.dovecot_fixtures import MailboxUser, dovecot, mailbox_user  # noqa: F401

S = Delivery.Status
SHARED = Path(os.environ.get("PORTAL_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
CORPUS = SHARED / "conformance" / "bounces" / "messages"


def corpus(name: str) -> bytes:
    path = CORPUS / name
    if not path.exists():
        message = f"bounce corpus missing: {path}"
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path.read_bytes()


@pytest.fixture(autouse=True)
def _bounce_address(settings):
    settings.BOUNCE_ADDRESS = "bounces@bounce.example"


@pytest.fixture
def invoice(db) -> Invoice:
    firm = FirmFactory()
    return Invoice.objects.create(
        firm=firm,
        client=ClientFactory(firm=firm),
        number=1,
        due_date=datetime.date(2030, 1, 31),
    )


@pytest.fixture
def make_delivery(invoice):
    def make(address: str, message_id: str = "") -> Delivery:
        return Delivery.objects.create(
            firm=invoice.firm,
            invoice=invoice,
            client=invoice.client,
            address=address,
            normalized=address.lower(),
            status=S.SENT,
            message_id=message_id or f"<{uuid.uuid4().hex}@portal.test>",
            verp_token=new_verp_token(),
        )

    return make


@pytest.fixture
def mailbox(mailbox_user: MailboxUser) -> MailboxSettings:  # noqa: F811
    server = mailbox_user.server
    return MailboxSettings(
        host=server.host,
        port=server.imap_port,
        user=mailbox_user.name,
        password=mailbox_user.password,
        security="none",
        timeout=10,
    )


@pytest.fixture
def deliver(mailbox_user: MailboxUser):  # noqa: F811
    """Put a message into the bounce mailbox as the final MTA would; returns its UID."""

    def put(raw: bytes, *, to: Delivery | None = None) -> int:
        if to is not None:
            raw = f"Delivered-To: {verp_address(to)}\r\n".encode() + raw
        return mailbox_user.server.append(mailbox_user.name, raw)

    return put


PLAIN_MESSAGE = (
    b"From: Ana <ana@client.test>\r\n"
    b"To: bounces@bounce.example\r\n"
    b"Subject: About the invoice\r\n"
    b"Message-ID: <question-1@client.test>\r\n"
    b"Date: Tue, 05 Nov 2024 10:00:00 +0000\r\n"
    b"\r\n"
    b"Hello, is the invoice due this month?\r\n"
)


def test_it_records_a_hard_bounce_found_by_its_verp_address(mailbox, deliver, make_delivery):
    delivery = make_delivery("kijitora@example.org")
    deliver(corpus("0018.eml"), to=delivery)

    result = bounce_mailbox_poll(mailbox=mailbox)

    assert (result.seen, result.recorded, result.skipped) == (1, 1, 0)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.BOUNCED, "delivery.hard_bounce")
    event = delivery.events.get()
    assert (event.source, event.status_code) == (DeliveryEvent.Source.DSN, "5.1.1")
    assert event.occurred_at.year == 2011  # the DSN's own date


def test_it_finds_the_delivery_by_the_quoted_message_id(mailbox, deliver, make_delivery):
    # No Delivered-To of ours: the report's copy of our message is all there is to go on.
    delivery = make_delivery(
        "mailboxfull@libsisimai.net", message_id="<66681a65.e0726.29ed079c@df.example.jp>"
    )
    other = make_delivery("someone@else.test")
    deliver(corpus("0061.eml"))

    bounce_mailbox_poll(mailbox=mailbox)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.SOFT_BOUNCED, "delivery.soft_bounce")
    assert delivery.events.get().status_code == "5.2.2"
    other.refresh_from_db()
    assert other.status == S.SENT


def test_a_delay_notice_is_a_delay(mailbox, deliver, make_delivery):
    delivery = make_delivery("sotoneko@nora.nyaan.jp")
    deliver(corpus("0347.eml"), to=delivery)  # Action: delayed, 4.4.1
    bounce_mailbox_poll(mailbox=mailbox)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.DEFERRED, "delivery.soft_bounce")


def test_an_expired_message_is_a_soft_bounce(mailbox, deliver, make_delivery):
    delivery = make_delivery("kijitora@example.com")
    deliver(corpus("0032.eml"), to=delivery)  # Action: failed, 4.4.7 message expired
    bounce_mailbox_poll(mailbox=mailbox)
    delivery.refresh_from_db()
    assert delivery.status == S.SOFT_BOUNCED


def test_a_delivery_notice_is_recorded_as_delivered(mailbox, deliver, make_delivery):
    # Quoted as text/rfc822-headers; found by the original Message-ID.
    delivery = make_delivery(
        "kijitora@neko.example.jp",
        message_id="<20151025071802.22CC00222233@neko-222-2222.vs.example.ne.jp>",
    )
    deliver(corpus("0297.eml"))
    bounce_mailbox_poll(mailbox=mailbox)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.DELIVERED, "")


def test_a_complaint_is_recorded_and_blocks_the_address(mailbox, deliver, make_delivery):
    delivery = make_delivery("kijitora@example.com")
    deliver(corpus("0013.eml"), to=delivery)
    bounce_mailbox_poll(mailbox=mailbox)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.COMPLAINED, "delivery.complaint")


def test_auto_replies_and_ordinary_mail_are_skipped(mailbox, deliver, make_delivery):
    delivery = make_delivery("kijitora@example.net")
    deliver(corpus("0309.eml"), to=delivery)  # "I am on vacation"
    deliver(PLAIN_MESSAGE, to=delivery)

    result = bounce_mailbox_poll(mailbox=mailbox)

    assert (result.seen, result.recorded, result.skipped) == (2, 0, 2)
    assert not DeliveryEvent.objects.exists()
    assert BounceMailboxCursor.objects.get().last_uid == 2  # read past them, not stuck


def test_a_second_poll_records_nothing_new(mailbox, deliver, make_delivery, mailbox_user):  # noqa: F811
    delivery = make_delivery("kijitora@example.org")
    uid = deliver(corpus("0018.eml"), to=delivery)
    assert bounce_mailbox_poll(mailbox=mailbox).recorded == 1

    again = bounce_mailbox_poll(mailbox=mailbox)
    assert (again.seen, again.recorded) == (0, 0)

    # Even reading everything again (a lost cursor) records each event once.
    BounceMailboxCursor.objects.update(last_uid=0)
    reread = bounce_mailbox_poll(mailbox=mailbox)
    assert (reread.seen, reread.recorded) == (1, 0)
    assert delivery.events.count() == 1
    # Read-only: nothing marked as read, nothing deleted.
    assert "\\Seen" not in mailbox_user.server.flags(mailbox_user.name, uid)
    assert mailbox_user.server.message_count(mailbox_user.name) == 1


def test_new_mail_after_a_poll_is_read_next_time(mailbox, deliver, make_delivery):
    first = make_delivery("kijitora@example.org")
    second = make_delivery("kijitora@example.com")
    deliver(corpus("0018.eml"), to=first)
    bounce_mailbox_poll(mailbox=mailbox)
    deliver(corpus("0013.eml"), to=second)

    result = bounce_mailbox_poll(mailbox=mailbox)

    assert (result.seen, result.recorded) == (1, 1)
    second.refresh_from_db()
    assert second.status == S.COMPLAINED


def test_a_new_uidvalidity_rereads_without_duplicates(
    mailbox,
    deliver,
    make_delivery,
    mailbox_user,  # noqa: F811
):
    delivery = make_delivery("kijitora@example.org")
    deliver(corpus("0018.eml"), to=delivery)
    bounce_mailbox_poll(mailbox=mailbox)
    mailbox_user.server.set_uidvalidity(mailbox_user.name, "INBOX", 987654)

    result = bounce_mailbox_poll(mailbox=mailbox)

    assert (result.seen, result.recorded) == (1, 0)
    assert BounceMailboxCursor.objects.get().uidvalidity == 987654
    assert delivery.events.count() == 1


def test_small_batches_move_the_cursor_as_they_go(mailbox, deliver, make_delivery):
    deliveries = [make_delivery(f"kijitora{n}@example.org") for n in range(3)]
    for delivery in deliveries:
        raw = corpus("0018.eml").replace(b"kijitora@example.org", delivery.address.encode())
        deliver(raw, to=delivery)

    result = bounce_mailbox_poll(mailbox=mailbox, batch_size=2)

    assert (result.seen, result.recorded) == (3, 3)
    assert BounceMailboxCursor.objects.get().last_uid == 3


def test_a_wrong_password_is_a_permanent_error(mailbox):
    wrong = MailboxSettings(
        host=mailbox.host,
        port=mailbox.port,
        user=mailbox.user,
        password="not-the-password",
        security="none",
        timeout=10,
    )
    with pytest.raises(BounceMailboxError) as error:
        bounce_mailbox_poll(mailbox=wrong)
    assert error.value.temporary is False


def test_a_server_that_is_not_there_is_a_temporary_error(db):
    from tests.servers.dovecot import free_port

    nowhere = MailboxSettings(
        host="127.0.0.1", port=free_port(), user="x", password="y", security="none", timeout=2
    )
    with pytest.raises(BounceMailboxError) as error:
        bounce_mailbox_poll(mailbox=nowhere)
    assert error.value.temporary is True


# --- where the UID is in a FETCH response ---------------------------------------------------

# Recorded from Dovecot 2.3 (UID FETCH 1:2 (UID BODY.PEEK[]<0.1000>)), as imaplib returns it.
# Dovecot always answers with the UID first, whatever order the items were asked in.
DOVECOT_UID_FIRST = [
    (b"1 (UID 1 BODY[]<0> {32}", b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n"),
    b")",
    (b"2 (UID 2 FLAGS (\\Recent) BODY[]<0> {33}", b"From: a@b\r\nSubject: y\r\n\r\nhello2\r\n"),
    b")",
]
# The same two messages from a server that sends the UID after the body, with an unsolicited
# FLAGS update between them (imaplib keeps the text after a literal as its own item).
UID_AFTER_BODY = [
    (b"1 (BODY[]<0> {32}", b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n"),
    b" UID 1)",
    b"5 (FLAGS (\\Seen))",
    (b"2 (FLAGS (\\Recent) BODY[]<0> {33}", b"From: a@b\r\nSubject: y\r\n\r\nhello2\r\n"),
    b" FLAGS (\\Recent) UID 2)",
]


@pytest.mark.parametrize("data", [DOVECOT_UID_FIRST, UID_AFTER_BODY], ids=["before", "after"])
def test_the_uid_is_found_before_or_after_the_body(data):
    messages = fetch_response_messages(data)

    assert [uid for uid, _raw in messages] == [1, 2]
    assert messages[1][1].endswith(b"hello2\r\n")


def test_a_message_without_a_uid_stops_the_poll_instead_of_being_skipped():
    data = [(b"1 (BODY[]<0> {5}", b"hello"), b")"]

    with pytest.raises(imaplib.IMAP4.error):
        fetch_response_messages(data)


class UidAfterBodyServer:
    """A loopback IMAP server that answers UID FETCH with the UID after the body literal, as
    some servers do (Dovecot never does), for the real imaplib client to read."""

    def __init__(self, raw: bytes, uid: int = 7) -> None:
        self.raw, self.uid = raw, uid
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK IMAP4rev1 ready\r\n")
            for line in lines:
                tag, command = line.rstrip(b"\r\n").split(b" ", 1)
                verb = command.split(b" ", 2)[:2]
                if verb[0].upper() == b"CAPABILITY":
                    reply = b"* CAPABILITY IMAP4rev1\r\n"
                elif verb[0].upper() == b"EXAMINE":
                    reply = b"* 1 EXISTS\r\n* OK [UIDVALIDITY 77] UIDs valid\r\n"
                elif verb == [b"UID", b"SEARCH"]:
                    reply = b"* SEARCH %d\r\n" % self.uid
                elif verb == [b"UID", b"FETCH"]:
                    reply = b"* 1 FETCH (BODY[]<0> {%d}\r\n%s UID %d)\r\n" % (
                        len(self.raw),
                        self.raw,
                        self.uid,
                    )
                elif verb[0].upper() == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    reply = b""
                conn.sendall(reply + tag + b" OK done\r\n")

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=10)


def test_a_bounce_from_a_server_that_sends_the_uid_after_the_body_is_recorded(make_delivery):
    delivery = make_delivery("kijitora@example.org")
    raw = f"Delivered-To: {verp_address(delivery)}\r\n".encode() + corpus("0018.eml")
    server = UidAfterBodyServer(raw)
    try:
        result = bounce_mailbox_poll(
            mailbox=MailboxSettings(
                host="127.0.0.1", port=server.port, user="u", password="p", security="none"
            )
        )
    finally:
        server.close()

    assert (result.seen, result.recorded) == (1, 1)
    delivery.refresh_from_db()
    assert delivery.status == S.BOUNCED
    assert BounceMailboxCursor.objects.get().last_uid == 7
