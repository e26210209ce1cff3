"""Exactly once: no invoice emailed twice, no payment lost or doubled, work that stops when its
lease is gone (issue 17). Races run in threads, each on its own PostgreSQL connection, against
the loopback SMTP server; crashes are a sender stopped between its steps."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from aiosmtpd.controller import Controller
from django.core import mail
from django.db import connection as db_connection
from django.db import transaction
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from invoicing import sending
from invoicing.delivery import sender
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression, WebhookEvent
from invoicing.delivery.outbox import deliveries_fail
from invoicing.delivery.refusals import delivery_soft_retry
from invoicing.delivery.sender import deliveries_send, deliveries_sending_expire, sending_lease
from invoicing.delivery.tasks import deliveries_send_task, webhook_events_sweep_task
from invoicing.emails import DELIVERY_METADATA_KEY
from invoicing.invoices import InvoiceError, invoice_void
from invoicing.models import Invoice, PayLink, Payment
from invoicing.payments.recording import payment_record
from invoicing.sending import delivery_resend, invoice_send, invoices_send_bulk
from invoicing.tasks import invoice_paid_notify_task
from tests.db_locks import only_on_postgresql
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

S = Delivery.Status

postgresql_only = only_on_postgresql("row locks are PostgreSQL's; SQLite runs one writer at a time")


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"


@pytest.fixture
def queued_tasks(monkeypatch) -> list[list[int]]:
    """The send tasks queued, as the broker would hold them, for the test to run as workers."""
    queued: list[list[int]] = []
    monkeypatch.setattr(deliveries_send_task, "delay", lambda ids: queued.append(list(ids)))
    return queued


def _client_with(firm, *addresses: str, name: str = "Birch Dental"):
    client = ClientFactory(firm=firm, display_name=name)
    contact = ContactFactory(client=client, name="Anna")
    for address in addresses:
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    return client


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at the same moment, each in a thread with its own database connection;
    what each returned (or raised)."""
    results: list[object] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # kept for the test to look at
            results[index] = exc
        finally:
            db_connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _run_workers(queued: list[list[int]]) -> None:
    """Every queued send task, run by as many workers at once."""
    tasks = list(queued)
    queued.clear()
    _race(*(lambda ids=ids: deliveries_send(delivery_ids=ids) for ids in tasks))


def _recipients(server) -> list[str]:
    return sorted(address for received in server.received for address in received.rcpt_tos)


# --- 1. sending twice -------------------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_sends_of_one_invoice_at_once_email_each_recipient_once(firm, smtp, queued_tasks):
    client = _client_with(firm, "anna@client.test", "ben@client.test")
    invoice = invoice_with_lines(client=client)

    results = _race(
        lambda: invoice_send(invoice=Invoice.objects.get(pk=invoice.pk)),
        lambda: invoice_send(invoice=Invoice.objects.get(pk=invoice.pk)),
    )
    _run_workers(queued_tasks)

    assert sorted(type(r).__name__ for r in results) == ["InvoiceError", "list"]
    assert _recipients(smtp) == ["anna@client.test", "ben@client.test"]
    assert Delivery.objects.filter(invoice=invoice).count() == 2
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_send_all_drafts_pressed_twice_at_once_emails_every_client_once(firm, smtp, queued_tasks):
    invoices = [
        invoice_with_lines(client=_client_with(firm, f"c{n}@client.test", name=f"C{n}"))
        for n in range(4)
    ]

    def press() -> sending.BulkSendResult:
        drafts = list(Invoice.objects.filter(firm=firm, status=Invoice.Status.DRAFT))
        return invoices_send_bulk(invoices=drafts)

    first, second = _race(press, press)
    _run_workers(queued_tasks)

    assert _recipients(smtp) == [f"c{n}@client.test" for n in range(4)]
    written = [r.deliveries for r in (first, second)]  # type: ignore[union-attr]
    assert sorted(len(d) for d in written) == [0, 4]
    assert Delivery.objects.filter(invoice__in=invoices).count() == 4


def test_send_all_drafts_pressed_again_before_the_worker_ran_sends_nothing_new(
    firm, staff_client, smtp, queued_tasks, django_capture_on_commit_callbacks
):
    invoice_with_lines(client=_client_with(firm, "ben@client.test", name="Oak"))
    url = reverse("invoicing:invoices_send_drafts")
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(url)
        page = staff_client.post(url, follow=True).content.decode()

    assert "already being sent to every recipient" in page
    for ids in queued_tasks:
        deliveries_send(delivery_ids=ids)
    assert _recipients(smtp) == ["ben@client.test"]


def test_the_send_button_pressed_twice_queues_one_email_per_recipient(
    firm, staff_client, smtp, queued_tasks, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    url = reverse("invoicing:invoice_send", args=[invoice.pk])
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(url)
        page = staff_client.post(url, follow=True).content.decode()

    assert "already being sent to every recipient" in page
    assert Delivery.objects.filter(invoice=invoice).count() == 1


def test_once_the_send_has_an_outcome_the_invoice_can_be_sent_again(
    firm, smtp, queued_tasks, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    with django_capture_on_commit_callbacks(execute=True):
        invoice_send(invoice=invoice)
    for ids in queued_tasks:
        deliveries_send(delivery_ids=ids)
    with django_capture_on_commit_callbacks(execute=True):
        again = invoice_send(invoice=invoice)

    assert [d.address for d in again] == ["anna@client.test"]


# --- 3. an invoice voided or paid after its email was queued ------------------------------


@pytest.mark.parametrize("change", ["void", "paid"])
def test_an_email_queued_before_the_invoice_was_voided_or_paid_is_cancelled(
    firm, smtp, queued_tasks, django_capture_on_commit_callbacks, change
):
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    with django_capture_on_commit_callbacks(execute=True):
        (delivery,) = invoice_send(invoice=invoice)
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.SENT)
    if change == "void":
        invoice_void(invoice=invoice)
    else:
        payment_record(invoice=invoice, amount=invoice.total)

    deliveries_send(delivery_ids=queued_tasks[0])

    assert smtp.received == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.CANCELLED, "")
    event = delivery.events.get()
    assert event.reason == f"invoice_{change}"
    assert "Not sent: the invoice was" in event.diagnostic
    assert not PayLink.objects.filter(delivery=delivery).exists()  # no Pay Now link issued


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_void_while_a_sender_claims_either_waits_or_cancels_the_email(firm, smtp, queued_tasks):
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.SENT)
    (delivery,) = delivery_ids = [d.pk for d in invoice_send(invoice=invoice)]

    _race(
        lambda: deliveries_send(delivery_ids=delivery_ids),
        lambda: invoice_void(invoice=Invoice.objects.get(pk=invoice.pk)),
    )

    status = Delivery.objects.get(pk=delivery).status
    # Voided first: not sent. Claimed first: sent before the void, which revoked its link.
    assert (status, len(smtp.received)) in [(S.CANCELLED, 0), (S.SENT, 1)]
    if status == S.SENT:
        assert PayLink.objects.get(delivery_id=delivery).is_usable() is False


# --- 4. a soft retry run twice ----------------------------------------------------------


def _soft_bounced(firm, address: str = "anna@client.test") -> Delivery:
    invoice = invoice_with_lines(client=_client_with(firm, address), status=Invoice.Status.SENT)
    return Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=invoice.client,
        address=address,
        normalized=address,
        status=S.SOFT_BOUNCED,
        verp_token=f"soft{invoice.pk:012d}",
    )


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_one_soft_retry_run_by_two_workers_at_once_sends_once(firm, smtp, queued_tasks):
    bounced = _soft_bounced(firm)

    results = _race(
        lambda: delivery_soft_retry(delivery_id=bounced.pk),
        lambda: delivery_soft_retry(delivery_id=bounced.pk),
    )
    _run_workers(queued_tasks)

    assert sorted(len(r) for r in results) == [0, 1]  # type: ignore[arg-type]
    assert _recipients(smtp) == ["anna@client.test"]
    assert Delivery.objects.filter(invoice=bounced.invoice).count() == 2


def test_a_soft_retry_run_again_after_it_sent_does_nothing(firm, smtp, queued_tasks):
    bounced = _soft_bounced(firm)
    with transaction.atomic():
        delivery_soft_retry(delivery_id=bounced.pk)
    assert delivery_soft_retry(delivery_id=bounced.pk) == []


def _settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import portal.settings as s; print(s.CELERY_BROKER_TRANSPORT_OPTIONS)"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SECRET_KEY": "x", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_redis_visibility_timeout_outlasts_the_longest_retry_countdown():
    found = _settings_with(CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert found.returncode == 0, found.stderr
    assert "'visibility_timeout': 21600" in found.stdout  # 6 h > the 4 h retry


def test_a_visibility_timeout_shorter_than_a_retry_countdown_is_refused_at_startup():
    found = _settings_with(
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0", CELERY_BROKER_VISIBILITY_TIMEOUT="3600"
    )
    assert found.returncode != 0
    assert "CELERY_BROKER_VISIBILITY_TIMEOUT must be longer" in found.stderr


# --- 5. a sender that outlives its lease ------------------------------------------------


def _queued(firm, count: int, queued_tasks, capture) -> list[int]:
    addresses = [f"r{n}@client.test" for n in range(count)]
    invoice = invoice_with_lines(client=_client_with(firm, *addresses))
    with capture(execute=True):
        invoice_send(invoice=invoice)
    ids = [pk for chunk in queued_tasks for pk in chunk]
    queued_tasks.clear()
    return ids


def test_a_sender_that_lost_its_lease_sends_nothing_more_and_records_nothing_over_it(
    firm, smtp, queued_tasks, django_capture_on_commit_callbacks
):
    ids = _queued(firm, 2, queued_tasks, django_capture_on_commit_callbacks)
    slow = sender._group_claim(ids)  # a sender that then hangs for longer than its lease
    deliveries_sending_expire(now=timezone.now() + sending_lease() * 2)
    # The owner sees "outcome unknown" and resends to the first address; a worker sends it.
    with django_capture_on_commit_callbacks(execute=True):
        delivery_resend(delivery=Delivery.objects.get(pk=ids[0]))
    for chunk in queued_tasks:
        deliveries_send(delivery_ids=chunk)
    assert _recipients(smtp) == ["r0@client.test"]

    # The slow sender wakes up: at its next renewal it finds its lease gone.
    slow.renewed = float("-inf")  # not 0.0: monotonic time starts near 0 on a fresh boot
    connection = sender.get_connection()
    connection.open()
    outcomes: dict[int, sender._Outcome] = {}
    try:
        sender._group_send(
            slow, connection, sender.InvoiceEmailBuilder(verp=True), sender._Later, outcomes
        )
    finally:
        connection.close()
    assert sender._group_record(slow, outcomes) == []

    assert _recipients(smtp) == ["r0@client.test"]  # nothing sent twice
    assert sorted(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == [
        S.UNKNOWN,
        S.UNKNOWN,
    ]


def test_a_sender_that_lost_its_lease_never_puts_its_deliveries_back_in_the_queue(
    firm, queued_tasks, django_capture_on_commit_callbacks
):
    ids = _queued(firm, 2, queued_tasks, django_capture_on_commit_callbacks)
    slow = sender._group_claim(ids)
    deliveries_sending_expire(now=timezone.now() + sending_lease() * 2)

    # Its connection dropped before anything was handed over: normally queued again.
    assert sender._group_record(slow, {}) == []

    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.UNKNOWN}
    assert DeliveryEvent.objects.filter(delivery_id__in=ids, kind=S.UNKNOWN).count() == 2


class _SlowHandler:
    """An SMTP server that takes its time over each message, as a loaded relay does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.received: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.seconds)
        self.received.append(list(envelope.rcpt_tos))
        return "250 2.0.0 Message accepted for delivery"


@pytest.fixture
def slow_smtp(settings) -> Iterator[_SlowHandler]:
    handler = _SlowHandler(0.5)
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_fixtures._free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 10
    try:
        yield handler
    finally:
        controller.stop()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_sender_slower_than_its_lease_keeps_it_by_renewing_and_sends_each_email_once(
    firm, slow_smtp, queued_tasks, settings
):
    # Six emails at 0.5 s each outlast a 2-second lease.
    settings.DELIVERY_SENDING_LEASE_SECONDS = 2
    settings.DELIVERY_SENDING_LEASE_RENEW_SECONDS = 0.2
    invoice = invoice_with_lines(
        client=_client_with(firm, *(f"r{n}@client.test" for n in range(6)))
    )
    invoice_send(invoice=invoice)
    (ids,) = queued_tasks
    stop = threading.Event()
    expired: list[int] = []

    def watchdog() -> None:
        while not stop.is_set():
            expired.append(deliveries_sending_expire())
            time.sleep(0.1)

    def sender() -> None:
        try:
            deliveries_send(delivery_ids=ids)
        finally:
            stop.set()

    _race(sender, watchdog)

    assert sum(expired) == 0
    assert sorted(r[0] for r in slow_smtp.received) == [f"r{n}@client.test" for n in range(6)]
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.SENT}


# --- deliveries_fail, the paid notice, a double-submitted payment ------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_giving_up_on_a_delivery_another_worker_is_claiming_leaves_it_alone(firm, queued_tasks):
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    (delivery,) = invoice_send(invoice=invoice)
    with transaction.atomic():
        # A stale-queue sweep's task claims it (not committed yet) while the first task, out
        # of retries, gives up on the same id.
        Delivery.objects.select_for_update().filter(pk=delivery.pk).update(status=S.SENDING)
        _race(
            lambda: deliveries_fail(delivery_ids=[delivery.pk], diagnostic="unreachable"),
        )
    delivery.refresh_from_db()
    assert delivery.status == S.SENDING
    assert not delivery.events.exists()


def _paid_invoice(firm) -> Invoice:
    invoice = invoice_with_lines(
        client=_client_with(firm, "anna@client.test"), status=Invoice.Status.SENT
    )
    with transaction.atomic():
        payment_record(invoice=invoice, amount=invoice.total)  # its own notice not run
    return invoice


def test_the_paid_notice_goes_once_when_its_task_is_delivered_twice(firm, owner):
    invoice = _paid_invoice(firm)
    mail.outbox.clear()

    invoice_paid_notify_task(invoice.pk)
    invoice_paid_notify_task(invoice.pk)  # the broker redelivers it

    assert len(mail.outbox) == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_paid_notice_run_by_two_workers_at_once_goes_once(firm, owner):
    invoice = _paid_invoice(firm)
    mail.outbox.clear()

    _race(
        lambda: invoice_paid_notify_task(invoice.pk), lambda: invoice_paid_notify_task(invoice.pk)
    )

    assert len(mail.outbox) == 1


def test_an_offline_payment_form_submitted_twice_records_one_payment(firm, owner, owner_client):
    invoice = invoice_with_lines(
        client=_client_with(firm, "anna@client.test"), status=Invoice.Status.SENT
    )
    page = owner_client.get(invoice.get_absolute_url()).content.decode()
    key = page.split('name="submission" value="')[1].split('"')[0]
    url = reverse("invoicing:payment_record", args=[invoice.pk])
    form = {"amount": "50.00", "reference": "bank 42", "submission": key}

    owner_client.post(url, form)
    owner_client.post(url, form)  # a double click, or the browser posting again

    assert list(Payment.objects.values_list("amount", flat=True)) == [Decimal("50.00")]


def test_two_views_of_the_invoice_are_two_payments_of_the_same_amount(firm, owner, owner_client):
    invoice = invoice_with_lines(
        client=_client_with(firm, "anna@client.test"), status=Invoice.Status.SENT
    )
    url = reverse("invoicing:payment_record", args=[invoice.pk])
    for reference in ("cash", "bank 42"):  # two payments, each typed into a fresh page
        page = owner_client.get(invoice.get_absolute_url()).content.decode()
        key = page.split('name="submission" value="')[1].split('"')[0]
        owner_client.post(url, {"amount": "10.00", "reference": reference, "submission": key})

    assert sorted(Payment.objects.values_list("reference", flat=True)) == ["bank 42", "cash"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_an_offline_payment_submitted_twice_at_once_records_one_payment(firm):
    invoice = invoice_with_lines(
        client=_client_with(firm, "anna@client.test"), status=Invoice.Status.SENT
    )

    def submit() -> Payment:
        return payment_record(invoice=invoice, amount=Decimal("50.00"), submission_key="k1")

    first, second = _race(submit, submit)

    assert Payment.objects.count() == 1
    assert first == second


def test_two_forms_with_the_same_amount_are_two_payments(firm):
    invoice = invoice_with_lines(
        client=_client_with(firm, "anna@client.test"), status=Invoice.Status.SENT
    )
    payment_record(invoice=invoice, amount=Decimal("10.00"), submission_key="a")
    payment_record(invoice=invoice, amount=Decimal("10.00"), submission_key="b")
    assert Payment.objects.count() == 2


def test_a_member_still_cannot_record_a_payment_on_a_draft_nobody_received(firm):
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    with pytest.raises(InvoiceError):
        payment_record(invoice=invoice, amount=Decimal("10.00"))


# --- ESP events of a delivery that never learnt its ESP message id -----------------------


POSTMARK = "/webhooks/anymail/postmark/tracking/"


@pytest.fixture
def postmark(settings) -> Callable[[dict], None]:
    from tests.invoicing.test_webhooks import AUTH, SECRET

    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}

    def post(body: dict) -> None:
        response = HttpClient().post(
            POSTMARK,
            data=json.dumps(body),
            content_type="application/json",
            headers={"Authorization": AUTH},
        )
        assert response.status_code == 200

    return post


def _aged_past_the_grace(settings) -> None:
    WebhookEvent.objects.update(
        received=timezone.now() - timedelta(minutes=settings.WEBHOOK_UNMATCHED_GRACE_MINUTES + 1)
    )


def test_an_esp_email_carries_its_deliverys_token_for_the_webhooks(
    firm, settings, queued_tasks, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.BOUNCE_ADDRESS = ""
    invoice = invoice_with_lines(client=_client_with(firm, "anna@client.test"))
    with django_capture_on_commit_callbacks(execute=True):
        (delivery,) = invoice_send(invoice=invoice)
    deliveries_send(delivery_ids=queued_tasks[0])

    (sent,) = mail.outbox
    assert sent.metadata == {DELIVERY_METADATA_KEY: delivery.verp_token}


def test_a_hard_bounce_of_an_email_whose_outcome_is_unknown_reaches_the_suppression_list(
    firm, settings, postmark
):
    from tests.invoicing.test_webhooks import postmark_bounce

    # The ESP's API timed out: the email may have left, and no ESP message id was stored.
    delivery = _soft_bounced(firm)
    Delivery.objects.filter(pk=delivery.pk).update(status=S.UNKNOWN, esp_message_id="")
    postmark(
        postmark_bounce(
            "pm-never-stored",
            email=delivery.address,
            Metadata={DELIVERY_METADATA_KEY: delivery.verp_token},
        )
    )
    _aged_past_the_grace(settings)  # long after the 40 minutes an unmatched event waits

    webhook_events_sweep_task()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.esp_message_id) == (S.BOUNCED, "pm-never-stored")
    assert Suppression.objects.filter(normalized=delivery.normalized).exists()


def test_an_event_for_a_group_sending_longer_than_the_grace_waits_for_it(firm, settings, postmark):
    from tests.invoicing.test_webhooks import postmark_delivery

    delivery = _soft_bounced(firm)
    # Claimed an hour ago by a sender that keeps renewing its lease: a big, slow group.
    Delivery.objects.filter(pk=delivery.pk).update(
        status=S.SENDING, claimed_at=timezone.now() - timedelta(hours=1), esp_message_id=""
    )
    postmark(postmark_delivery("pm-slow", email=delivery.address))
    _aged_past_the_grace(settings)
    WebhookEvent.objects.update(received=timezone.now() - timedelta(minutes=50))

    webhook_events_sweep_task()
    assert WebhookEvent.objects.get().processed_at is None  # still waiting

    # The sender records its group at last; the next sweep matches the event.
    Delivery.objects.filter(pk=delivery.pk).update(status=S.SENT, esp_message_id="pm-slow")
    webhook_events_sweep_task()
    delivery.refresh_from_db()
    assert delivery.status == S.DELIVERED
