"""The sender claims a group, sends it over one connection and records it in one go.

What a crash, a lost connection or a bug in the middle leaves behind: never an email sent
twice on a guess, never one forgotten.
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from email import message_from_bytes, policy
from unittest import mock

import pytest
from aiosmtpd.controller import Controller
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery import sender
from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.delivery.sender import (
    OUTCOME_UNKNOWN,
    SENDING_LEASE,
    deliveries_send,
    deliveries_sending_expire,
)
from invoicing.delivery.tasks import deliveries_sending_expire_task
from invoicing.emails import InvoiceEmailBuilder
from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_token_hash
from invoicing.sending import invoice_send, invoices_send_bulk
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

PAY_LINK = re.compile(r"http://testserver/pay/([A-Za-z0-9_-]{43})/")
S = Delivery.Status


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"


def _invoice(firm, *addresses, name="Birch Dental"):
    client = ClientFactory(firm=firm, display_name=name)
    contact = ContactFactory(client=client, name="Anna")
    for address in addresses:
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    return invoice_with_lines(client=client)


def _queued(firm, count, prefix="c"):
    """`count` invoices to one address each, queued (not sent): the deliveries' ids."""
    invoices = [
        _invoice(firm, f"{prefix}{n}@client.test", name=f"{prefix.upper()}{n}")
        for n in range(count)
    ]
    with mock.patch("invoicing.delivery.tasks.deliveries_send_task.delay"):
        result = invoices_send_bulk(invoices=invoices)
    return [d.pk for d in result.deliveries]


class _Dropping:
    """An SMTP server that hangs up when asked to take mail for drop@client.test."""

    def __init__(self) -> None:
        self.received: list[list[str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == "drop@client.test":
            server.transport.close()
            return "421 4.3.0 Going away"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(list(envelope.rcpt_tos))
        return "250 2.0.0 OK"


@pytest.fixture
def dropping_smtp(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = _Dropping()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield handler
    finally:
        controller.stop()


def _statuses(ids):
    found = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "status"))
    return [found[pk] for pk in ids]


# --- the normal path ----------------------------------------------------------------------


def test_sending_a_group_takes_the_same_queries_for_3_or_30_emails(firm, smtp):
    small, large = _queued(firm, 3, "s"), _queued(firm, 30, "l")
    with CaptureQueriesContext(db_connection) as three:
        assert deliveries_send(delivery_ids=small) == []
    with CaptureQueriesContext(db_connection) as thirty:
        assert deliveries_send(delivery_ids=large) == []
    assert len(three) == len(thirty)
    assert _statuses(large) == [S.SENT] * 30
    assert len(smtp.received) == 33


def test_every_sent_email_has_a_stored_link_a_sent_event_and_its_invoice_is_sent(firm, smtp):
    ids = _queued(firm, 4)
    deliveries_send(delivery_ids=ids)
    for received in smtp.received:
        delivery = Delivery.objects.get(address=received.rcpt_tos[0])
        token = PAY_LINK.search(received.message.get_body(("plain",)).get_content()).group(1)
        assert PayLink.objects.get(delivery=delivery).token_hash == pay_token_hash(token)
        assert list(delivery.events.values_list("kind", "source")) == [("sent", "smtp")]
        assert delivery.claimed_at is not None
        assert delivery.invoice.status == Invoice.Status.SENT


def test_groups_split_a_task_and_each_recipient_of_one_invoice_gets_its_own_link(firm, smtp):
    invoice = _invoice(firm, "a@client.test", "b@client.test", "c@client.test")
    with mock.patch("invoicing.delivery.tasks.deliveries_send_task.delay"):
        ids = [d.pk for d in invoice_send(invoice=invoice)]
    with mock.patch.object(sender, "SEND_GROUP", 2):
        assert deliveries_send(delivery_ids=ids) == []
    texts = [r.message.get_body(("plain",)).get_content() for r in smtp.received]
    tokens = {PAY_LINK.search(text).group(1) for text in texts}
    assert len(tokens) == 3
    assert _statuses(ids) == [S.SENT] * 3


def test_a_task_run_twice_sends_each_email_once(firm, smtp):
    ids = _queued(firm, 3)
    deliveries_send(delivery_ids=ids)
    deliveries_send(delivery_ids=ids)
    assert len(smtp.received) == 3


def test_a_prepared_email_is_byte_for_byte_what_django_would_send(firm):
    # The builder flattens the email itself (ahead of sending, with a faster header
    # policy); the result must be what Django's own `message().as_bytes()` gives.
    invoice = _invoice(firm, "anna@client.test", name="Birch & <Dental> Åland " + "x" * 60)
    invoice.notes = "Thanks\nfor the year"
    delivery = Delivery(
        firm=firm,
        invoice=invoice,
        client=invoice.client,
        address="anna@client.test",
        normalized="anna@client.test",
        verp_token="a" * 32,
        message_id="<1@portal.test>",
    )
    email = InvoiceEmailBuilder().build(
        delivery=delivery, invoice=invoice, pay_token="t" * 43, lines=list(invoice.lines.all())
    )
    django_bytes = email.message().as_bytes(linesep="\r\n")
    prepared = email.prepare().message().as_bytes(linesep="\r\n")

    def comparable(data: bytes) -> bytes:  # Date and boundary differ between two builds
        data = re.sub(rb"Date: [^\r]*", b"Date: -", data)
        return re.sub(rb"={15}\d{19}==", b"-boundary-", data)

    assert comparable(prepared) == comparable(django_bytes)
    parsed = message_from_bytes(prepared, policy=policy.default)
    assert "Åland" in parsed["Subject"]


# --- when something goes wrong --------------------------------------------------------------


def test_a_lost_connection_queues_the_rest_again_for_the_tasks_retry(firm, dropping_smtp):
    ids = _queued(firm, 1, "ok") + _queued(firm, 1, "drop") + _queued(firm, 1, "later")
    Delivery.objects.filter(pk=ids[1]).update(address="drop@client.test")

    retry = deliveries_send(delivery_ids=ids)

    assert dropping_smtp.received == [["ok0@client.test"]]
    assert retry == ids[1:]
    assert _statuses(ids) == [S.SENT, S.QUEUED, S.QUEUED]
    # The links of the two never left, so none is kept; the retry stores new ones.
    assert not PayLink.objects.filter(delivery_id__in=ids[1:]).exists()


def test_a_worker_killed_after_claiming_never_sends_again_and_the_watchdog_says_unknown(
    firm, smtp, staff_client
):
    ids = _queued(firm, 2)
    sender._group_claim(ids)  # ... and the worker dies here, before any SMTP.
    assert _statuses(ids) == [S.SENDING, S.SENDING]
    assert PayLink.objects.filter(delivery_id__in=ids).count() == 2

    # The broker redelivers the task (acks_late): the claimed deliveries are not re-sent.
    assert deliveries_send(delivery_ids=ids) == []
    assert smtp.received == []

    assert deliveries_sending_expire() == 0  # within the lease: maybe still sending
    later = timezone.now() + SENDING_LEASE + timedelta(seconds=1)
    assert deliveries_sending_expire(now=later) == 2

    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.problem_code) == (S.UNKNOWN, OUTCOME_UNKNOWN)
    event = delivery.events.get()
    assert (event.kind, event.source) == ("unknown", "portal")
    assert "sent at most once" in event.diagnostic
    page = staff_client.get(delivery.invoice.get_absolute_url()).content.decode()
    assert "Outcome unknown" in page
    assert "sent at most once" in page
    assert "Sending was interrupted after the email may have left" in page  # PROBLEM_TEXT
    assert reverse("invoicing:delivery_resend", args=[delivery.invoice_id, delivery.pk]) in page


def test_resend_after_an_unknown_outcome_sends_a_new_email(
    firm, smtp, staff_client, django_capture_on_commit_callbacks, tasks_run_inline
):
    ids = _queued(firm, 1)
    sender._group_claim(ids)
    deliveries_sending_expire(now=timezone.now() + SENDING_LEASE * 2)
    unknown = Delivery.objects.get(pk=ids[0])

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("invoicing:delivery_resend", args=[unknown.invoice_id, unknown.pk])
        )

    assert [r.rcpt_tos for r in smtp.received] == [[unknown.address]]
    resent = Delivery.objects.exclude(pk=unknown.pk).get()
    assert resent.status == S.SENT
    unknown.pay_link.refresh_from_db()
    assert unknown.pay_link.revoked_at is not None


def test_a_slow_sender_that_records_after_the_watchdog_still_wins(firm, smtp):
    ids = _queued(firm, 1)
    group = sender._group_claim(ids)
    deliveries_sending_expire(now=timezone.now() + SENDING_LEASE * 2)
    outcomes = {ids[0]: sender._Outcome(sender._Result.ACCEPTED, timezone.now())}

    sender._group_record(group, outcomes)

    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.problem_code) == (S.SENT, "")
    assert list(delivery.events.order_by("pk").values_list("kind", flat=True)) == [
        "unknown",
        "sent",
    ]


def test_a_webhook_that_arrives_before_the_record_is_not_undone(firm, smtp):
    ids = _queued(firm, 1)
    group = sender._group_claim(ids)
    Delivery.objects.filter(pk=ids[0]).update(status=S.DELIVERED)  # an ESP was quicker
    outcomes = {ids[0]: sender._Outcome(sender._Result.ACCEPTED, timezone.now())}

    sender._group_record(group, outcomes)

    assert _statuses(ids) == [S.DELIVERED]
    assert DeliveryEvent.objects.filter(delivery_id=ids[0], kind="sent").exists()


def test_an_error_mid_group_records_what_is_known_and_calls_the_one_in_flight_unknown(
    firm, smtp, settings
):
    ids = _queued(firm, 3)
    real_send = sender._send_one
    calls = []

    def send_then_fail(connection, delivery, message, *rest):
        calls.append(delivery.pk)
        if len(calls) == 2:
            raise RuntimeError("a bug")  # anything unexpected, after the email may have left
        return real_send(connection, delivery, message, *rest)

    with mock.patch.object(sender, "_send_one", side_effect=send_then_fail):
        retry = deliveries_send(delivery_ids=ids)

    assert _statuses(ids) == [S.SENT, S.UNKNOWN, S.QUEUED]
    assert Delivery.objects.get(pk=ids[1]).problem_code == OUTCOME_UNKNOWN
    assert not PayLink.objects.filter(delivery_id=ids[2]).exists()
    assert retry == [ids[2]]  # handed back to the task's retries, not left queued for ever


def test_after_an_unexpected_error_the_task_retries_the_rest_and_sends_them(firm, smtp, settings):
    ids = _queued(firm, 3)
    real_send = sender._send_one
    failed_once = []

    def fail_once(connection, delivery, message, *rest):
        if delivery.pk == ids[1] and not failed_once:
            failed_once.append(True)
            raise RuntimeError("a bug that went away")
        return real_send(connection, delivery, message, *rest)

    with mock.patch.object(sender, "_send_one", side_effect=fail_once):
        retry = deliveries_send(delivery_ids=ids)
        assert deliveries_send(delivery_ids=retry) == []

    assert _statuses(ids) == [S.SENT, S.UNKNOWN, S.SENT]


def test_an_email_that_cannot_be_built_is_recorded_as_not_sent_and_the_rest_go(firm, smtp):
    ids = _queued(firm, 3)
    real_build = InvoiceEmailBuilder.build

    def build(self, *, delivery, **kwargs):
        if delivery.pk == ids[1]:
            raise ValueError("a template bug")
        return real_build(self, delivery=delivery, **kwargs)

    with mock.patch.object(InvoiceEmailBuilder, "build", build):
        assert deliveries_send(delivery_ids=ids) == []

    assert _statuses(ids) == [S.SENT, S.FAILED, S.SENT]
    failed = Delivery.objects.get(pk=ids[1])
    assert failed.problem_code == "delivery.not_sent_rejected_document"
    assert "a template bug" in failed.events.get().diagnostic


def test_the_watchdog_is_a_scheduled_task(firm):
    from portal.schedules import SCHEDULES

    assert "invoicing.expire_stuck_sending" in {s.task for s in SCHEDULES}
    ids = _queued(firm, 1)
    sender._group_claim(ids)
    Delivery.objects.filter(pk=ids[0]).update(claimed_at=timezone.now() - SENDING_LEASE * 2)
    deliveries_sending_expire_task()
    assert _statuses(ids) == [S.UNKNOWN]


@pytest.mark.usefixtures("tasks_run_inline")
def test_queued_emails_whose_task_was_lost_are_sent_by_the_sweep(firm, smtp):
    from invoicing.delivery.tasks import deliveries_requeue_stale_task
    from portal.schedules import SCHEDULES

    assert "invoicing.requeue_stale_deliveries" in {s.task for s in SCHEDULES}
    lost = _queued(firm, 2)  # their task never ran (_queued swallows it)
    fresh = _queued(firm, 1, prefix="f")
    Delivery.objects.filter(pk__in=lost).update(updated=timezone.now() - timedelta(hours=2))

    deliveries_requeue_stale_task()

    assert _statuses(lost) == [S.SENT, S.SENT]
    assert _statuses(fresh) == [S.QUEUED]  # its own task may still be on its way
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == ["c0@client.test", "c1@client.test"]
