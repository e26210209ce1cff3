"""SMTP PIPELINING (RFC 2920): fewer round trips, the same outcome as smtplib's `sendmail`.

Two real aiosmtpd servers on loopback with the refusals of `tests/servers/smtp.py` (550
5.1.1, 452 4.2.2, 554 5.7.1 for its special addresses), one advertising PIPELINING as
Postfix and Exim do, the other not (as aiosmtpd by default). The same sends go through
`smtp_pipelining.sendmail` to the first and through smtplib's own `sendmail` to the second:
what the servers received and what the caller learns (return value or exception, code and
text) must be the same. smtplib's writes to the socket are counted through its audit event.
"""

from __future__ import annotations

import smtplib
import socket
import sys
from collections.abc import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller

from invoicing.delivery import pipelining as smtp_pipelining
from invoicing.delivery.models import Delivery
from invoicing.models import Invoice
from invoicing.sending import invoice_send
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers.smtp import FULL, POLICY, REFUSALS, UNKNOWN, Received, SMTPServer

tasks_run_inline = factories.tasks_run_inline

REFUSED_SENDER = "refused-sender@portal.test"
CLOSING = "closing@client.test"  # answered 421: the server is going away
DATA_REFUSED = b"X-Test-Refuse: yes"


class _Handler:
    """`tests/servers/smtp.py`'s handler, plus a refused sender, a 421 and a refused DATA."""

    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.received: list[Received] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address == REFUSED_SENDER:
            return "553 5.7.1 Sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() == CLOSING:
            return "421 4.3.2 Service shutting down"
        if address.lower() in REFUSALS:
            return REFUSALS[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if DATA_REFUSED in envelope.original_content:
            return "554 5.6.0 Message content rejected"
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 Message accepted for delivery"


class _Server(SMTPServer):
    def __init__(self, *, pipelining: bool) -> None:  # not super's: its Controller would leak
        self.handler = _Handler(pipelining)  # type: ignore[assignment]
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.controller = Controller(self.handler, hostname=self.host, port=self.port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[bool, _Server]]:
    """{True: the server that advertises PIPELINING, False: the one that does not}."""
    both = {True: _Server(pipelining=True), False: _Server(pipelining=False)}
    for server in both.values():
        server.start()
    try:
        yield both
    finally:
        for server in both.values():
            server.stop()


_writes: list[bytes] | None = None


def _count_writes(event: str, args: tuple) -> None:
    if event == "smtplib.send" and _writes is not None:
        _writes.append(args[1])


sys.addaudithook(_count_writes)  # audit hooks cannot be removed: it records only when asked


def _send_both(
    servers: dict[bool, _Server], sender: str, recipients: list[str], data: bytes
) -> dict[bool, tuple[str, object]]:
    """The same email pipelined to one server, through plain smtplib to the other: per
    server, what the caller learned (the return value, or the exception's type and args)."""
    global _writes
    learned: dict[bool, tuple[str, object]] = {}
    for pipelining, server in servers.items():
        server.received.clear()
        send: Callable[..., object] = (
            smtp_pipelining.sendmail if pipelining else smtplib.SMTP.sendmail
        )
        with smtplib.SMTP(server.host, server.port, timeout=10) as connection:
            try:
                learned[pipelining] = ("returned", send(connection, sender, recipients, data))
            except smtplib.SMTPException as exc:
                learned[pipelining] = (type(exc).__name__, exc.args)
            # The connection is still usable (or closed, as smtplib leaves it after a 421).
            if connection.sock is not None:
                connection.sendmail(
                    "a@portal.test", ["after@client.test"], b"Subject: next\r\n\r\nok\r\n"
                )
    return learned


def _received(servers: dict[bool, _Server], pipelining: bool) -> list[tuple]:
    return [(r.mail_from, r.rcpt_tos, r.data) for r in servers[pipelining].received]


EMAIL = (
    b"From: billing@alder.test\r\nTo: anna@client.test\r\nSubject: Invoice #7\r\n\r\n"
    b"Line one\r\n.a line that starts with a dot\r\n..and two\r\n.\r\nlast line, no CRLF"
)


def test_a_server_offering_pipelining_gets_an_emails_commands_in_one_write(servers):
    global _writes
    for pipelining, expected_writes in ((True, 2), (False, 4)):
        server = servers[pipelining]
        server.received.clear()
        with smtplib.SMTP(server.host, server.port, timeout=10) as connection:
            connection.ehlo()
            _writes = []
            try:
                smtp_pipelining.sendmail(connection, "a@portal.test", ["anna@client.test"], EMAIL)
                writes = _writes
            finally:
                _writes = None
        assert len(writes) == expected_writes
    assert writes[0].lower().startswith(b"mail from:")  # the fallback: smtplib, one by one
    assert len(servers[True].received) == 1


def test_pipelined_and_plain_sends_deliver_the_same_envelope_and_bytes(servers):
    learned = _send_both(servers, "a@portal.test", ["anna@client.test", "ben@client.test"], EMAIL)

    assert learned[True] == learned[False] == ("returned", {})
    assert _received(servers, True) == _received(servers, False)
    first = servers[True].received[0]
    assert first.rcpt_tos == ["anna@client.test", "ben@client.test"]
    assert b"\r\n.a line that starts with a dot\r\n..and two\r\n.\r\n" in first.data


@pytest.mark.parametrize("refused", [UNKNOWN, FULL, POLICY])
def test_a_refused_recipient_raises_what_smtplib_raises_with_its_code_and_text(servers, refused):
    learned = _send_both(servers, "a@portal.test", [refused], EMAIL)

    assert learned[True] == learned[False]
    kind, (refusals,) = learned[True]
    assert kind == "SMTPRecipientsRefused"
    code, text = refusals[refused]
    assert f"{code} {text.decode()}" == REFUSALS[refused]
    # Nothing left but the next email, on the same connection.
    assert _received(servers, True) == _received(servers, False)
    assert [r.rcpt_tos for r in servers[True].received] == [["after@client.test"]]


def test_some_recipients_refused_are_returned_and_the_others_get_the_email(servers):
    learned = _send_both(servers, "a@portal.test", ["anna@client.test", UNKNOWN, FULL], EMAIL)

    assert learned[True] == learned[False]
    kind, refused = learned[True]
    assert kind == "returned"
    assert {address: code for address, (code, _text) in refused.items()} == {
        UNKNOWN: 550,
        FULL: 452,
    }
    assert _received(servers, True) == _received(servers, False)


def test_a_refused_sender_raises_what_smtplib_raises(servers):
    learned = _send_both(servers, REFUSED_SENDER, ["anna@client.test"], EMAIL)

    assert learned[True] == learned[False]
    assert learned[True][0] == "SMTPSenderRefused"
    assert learned[True][1][0] == 553
    assert _received(servers, True) == _received(servers, False)


def test_refused_content_raises_what_smtplib_raises(servers):
    learned = _send_both(
        servers, "a@portal.test", ["anna@client.test"], DATA_REFUSED + b"\r\n\r\nbody\r\n"
    )

    assert learned[True] == learned[False]
    assert learned[True] == ("SMTPDataError", (554, b"5.6.0 Message content rejected"))
    assert [r.rcpt_tos for r in servers[True].received] == [["after@client.test"]]


def test_a_421_closes_the_connection_as_smtplib_does(servers):
    learned = _send_both(servers, "a@portal.test", [CLOSING], EMAIL)

    assert learned[True] == learned[False]
    assert learned[True][0] == "SMTPRecipientsRefused"
    assert servers[True].received == servers[False].received == []  # closed: no next email


@pytest.fixture
def pipelining_smtp(servers, settings) -> _Server:
    server = servers[True]
    server.received.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 10
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"
    return server


@pytest.mark.usefixtures("tasks_run_inline")
def test_the_sender_records_each_pipelined_outcome_with_its_smtp_code(
    firm, pipelining_smtp, django_capture_on_commit_callbacks
):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    contact = ContactFactory(client=client, name="Anna")
    for address in ("ok@client.test", UNKNOWN, FULL, POLICY):
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    invoice = invoice_with_lines(client=client)

    with django_capture_on_commit_callbacks(execute=True):
        invoice_send(invoice=invoice)

    assert [r.rcpt_tos for r in pipelining_smtp.received] == [["ok@client.test"]]
    outcomes = {
        d.address: (d.status, [(e.kind, e.reply_code, e.status_code) for e in d.events.all()])
        for d in Delivery.objects.prefetch_related("events")
    }
    assert outcomes["ok@client.test"] == ("sent", [("sent", "", "")])
    assert outcomes[UNKNOWN][0] == "bounced"
    assert ("bounced", "550", "5.1.1") in outcomes[UNKNOWN][1]
    assert outcomes[FULL][0] == "soft_bounced"
    assert ("soft_bounced", "452", "4.2.2") in outcomes[FULL][1]
    assert outcomes[POLICY][0] == "rejected"
    assert ("rejected", "554", "5.7.1") in outcomes[POLICY][1]
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT
