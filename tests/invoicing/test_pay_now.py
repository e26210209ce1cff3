"""The public Pay Now page and recording a payment."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time
from kombu.exceptions import OperationalError

from accounts.models import Role
from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.models import FirmBillingSettings, Invoice, Payment
from invoicing.paylinks import pay_link_create
from invoicing.tasks import pay_link_request_notify_task
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, MembershipFactory
from tests.invoicing import factories, test_webhook_ingest
from tests.invoicing.factories import InvoiceLineFactory, invoice_with_lines
from tests.invoicing.test_webhook_ingest import queued_tasks, run_like_a_worker

tasks_run_inline = factories.tasks_run_inline


@pytest.fixture
def queue():
    """The send queue on the in-memory broker: the notice to the firm is sending work."""
    with test_webhook_ingest.broker_queue("send") as simple:
        yield simple


def _sent_invoice(firm, *, description="Annual accounts SECRET-LINE", **kwargs):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    address = ContactAddressFactory(contact=ContactFactory(client=client))
    invoice = invoice_with_lines(client=client, lines=0, status=Invoice.Status.SENT, **kwargs)
    InvoiceLineFactory(invoice=invoice, description=description, unit_price=Decimal("120.00"))
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address=address.address,
        normalized=address.normalized,
        status=Delivery.Status.SENT,
        verp_token=f"tok{invoice.pk:013d}",
    )
    return invoice, pay_link_create(delivery=delivery)


def _pay(http, token):
    return http.get(reverse("invoicing:pay", args=[token]))


def test_it_shows_the_one_invoice_and_how_to_pay(client, firm):
    FirmBillingSettings.objects.create(firm=firm, payment_instructions="IBAN FI00 1234")
    _invoice, token = _sent_invoice(firm)
    _sent_invoice(firm, description="Other client's line")
    response = _pay(client, token)
    body = response.content.decode()
    assert response.status_code == 200
    assert firm.name.replace("&", "&amp;") in body
    assert "Annual accounts SECRET-LINE" in body
    assert "120.00 EUR" in body
    assert "IBAN FI00 1234" in body
    assert "Other client&#x27;s line" not in body and "Other client's line" not in body
    assert response["Referrer-Policy"] == "same-origin"


def test_opening_it_records_viewed_but_changes_no_payment(client, firm):
    invoice, token = _sent_invoice(firm)
    _pay(client, token)
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VIEWED
    assert invoice.pay_links.get().last_viewed_at is not None
    assert not Payment.objects.exists()
    _pay(client, token)  # a second visit records no second "clicked" event
    assert DeliveryEvent.objects.filter(kind="clicked").count() == 1


def test_a_wrong_token_is_not_found_and_names_no_firm(client, firm):
    _sent_invoice(firm)
    response = _pay(client, "x" * 43)
    assert response.status_code == 404
    assert "Alder" not in response.content.decode()


def test_a_revoked_link_asks_for_a_new_one(client, firm):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    response = _pay(client, token)
    assert response.status_code == 410
    body = response.content.decode()
    assert "no longer valid" in body
    assert "SECRET-LINE" not in body


def test_an_expired_link_asks_for_a_new_one(client, firm, settings):
    settings.PAY_LINK_DAYS = 60
    invoice, token = _sent_invoice(firm)
    with freeze_time(timezone.now() + datetime.timedelta(days=61)):
        response = _pay(client, token)
    assert response.status_code == 410
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


def test_a_void_invoices_link_no_longer_works(client, firm):
    invoice, token = _sent_invoice(firm)
    invoice.status = Invoice.Status.VOID
    invoice.save()
    assert _pay(client, token).status_code == 410


def test_the_page_refuses_to_change_anything_by_post(client, firm):
    _invoice, token = _sent_invoice(firm)
    response = client.post(reverse("invoicing:pay", args=[token]))
    assert response.status_code == 405


def test_the_token_is_stored_only_as_its_hash(firm):
    invoice, token = _sent_invoice(firm)
    link = invoice.pay_links.get()
    assert token not in link.token_hash
    assert len(token) >= 43  # 32 random bytes


def test_an_owner_records_a_payment_and_owners_are_told(
    owner_client, owner, firm, django_capture_on_commit_callbacks, tasks_run_inline
):
    MembershipFactory(firm=firm, role=Role.OWNER, user__email="second-owner@alder.test")
    invoice, token = _sent_invoice(firm)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(
            reverse("invoicing:payment_record", args=[invoice.pk]),
            {"amount": "120.00", "reference": "BANK-77"},
        )
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert invoice.paid_at is not None
    payment = Payment.objects.get()
    assert (payment.amount, payment.reference, payment.recorded_by) == (
        Decimal("120.00"),
        "BANK-77",
        owner.user,
    )
    (notice,) = mail.outbox
    assert sorted(notice.to) == ["owner@alder.test", "second-owner@alder.test"]
    assert f"Invoice #{invoice.number} for Birch Dental is paid" == notice.subject
    assert "This invoice is paid" in _pay(owner_client, token).content.decode()


def test_a_part_payment_leaves_the_invoice_open(owner_client, firm):
    invoice, _ = _sent_invoice(firm)
    owner_client.post(reverse("invoicing:payment_record", args=[invoice.pk]), {"amount": "20"})
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


def test_staff_cannot_record_payments(staff_client, firm):
    invoice, _ = _sent_invoice(firm)
    response = staff_client.post(
        reverse("invoicing:payment_record", args=[invoice.pk]), {"amount": "120"}
    )
    assert response.status_code == 403
    assert not Payment.objects.exists()


def test_owners_edit_the_payment_instructions(owner_client, firm):
    owner_client.post(
        reverse("invoicing:billing_settings"),
        {"payment_instructions": "Pay to IBAN X", "currency": "nok"},
    )
    settings = FirmBillingSettings.objects.get(firm=firm)
    assert (settings.payment_instructions, settings.currency) == ("Pay to IBAN X", "NOK")


@pytest.mark.parametrize("name", ["billing_settings"])
def test_staff_cannot_edit_billing_settings(staff_client, name):
    assert staff_client.get(reverse(f"invoicing:{name}")).status_code == 403


# --- an expired or replaced link: asking the firm for a new one ------------------------


def _ask_for_new_link(http, token, capture):
    with capture(execute=True):
        return http.post(reverse("invoicing:pay_link_request", args=[token]))


def test_the_page_answers_without_waiting_for_the_email(
    client, owner, firm, django_capture_on_commit_callbacks, queue
):
    # Celery is not eager here: the email waits on the broker for a worker.
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    mail.outbox.clear()

    response = _ask_for_new_link(client, token, django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert mail.outbox == []
    [task] = queued_tasks(queue)
    assert task.headers["task"] == "invoicing.pay_link_request_notify"
    run_like_a_worker(task)
    (notice,) = mail.outbox
    assert notice.to == ["owner@alder.test"]


def test_the_page_answers_while_the_broker_is_down(
    client, owner, firm, django_capture_on_commit_callbacks, monkeypatch
):
    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(pay_link_request_notify_task, "delay", broker_down)
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())

    response = _ask_for_new_link(client, token, django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert "has been told" in response.content.decode()
    assert DeliveryEvent.objects.filter(kind="link_requested").count() == 1  # on the timeline


def test_an_expired_link_offers_to_ask_the_firm_for_a_new_one(client, firm):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    body = _pay(client, token).content.decode()
    assert reverse("invoicing:pay_link_request", args=[token]) in body
    assert "Ask Alder &amp; Birch Accounting for a new link" in body


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_asking_for_a_new_link_tells_the_firm_by_email_and_on_the_invoice(
    client, owner, owner_client, firm, settings, django_capture_on_commit_callbacks
):
    settings.SITE_URL = "https://portal.test"
    author = MembershipFactory(firm=firm, role=Role.STAFF, user__email="author@alder.test")
    invoice, token = _sent_invoice(firm, created_by=author.user)
    invoice.pay_links.update(revoked_at=timezone.now())
    mail.outbox.clear()

    response = _ask_for_new_link(client, token, django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert "Alder &amp; Birch Accounting has been told" in response.content.decode()
    (notice,) = mail.outbox
    assert sorted(notice.to) == ["author@alder.test", "owner@alder.test"]
    assert notice.subject == (
        f"Birch Dental asks for a new payment link for invoice #{invoice.number}"
    )
    delivery = invoice.deliveries.get()
    assert delivery.address in notice.body
    assert f"https://portal.test{invoice.get_absolute_url()}" in notice.body
    page = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "asked for a new one" in page
    assert "The client asked for a new link" in page
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT  # the request changes no delivery state


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_each_member_is_told_in_the_language_they_chose(
    client, owner, firm, django_capture_on_commit_callbacks
):
    author = MembershipFactory(firm=firm, role=Role.STAFF, user__email="author@alder.test")
    author.user.language = "fi"
    author.user.save()
    invoice, token = _sent_invoice(firm, created_by=author.user)
    invoice.pay_links.update(revoked_at=timezone.now())
    mail.outbox.clear()

    _ask_for_new_link(client, token, django_capture_on_commit_callbacks)

    by_recipient = {tuple(m.to): m for m in mail.outbox}
    assert set(by_recipient) == {("author@alder.test",), ("owner@alder.test",)}
    assert by_recipient[("owner@alder.test",)].subject.startswith("Birch Dental asks for")
    finnish = by_recipient[("author@alder.test",)]
    assert "Birch Dental asks for" not in finnish.subject
    assert str(invoice.number) in finnish.subject


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_asking_again_the_same_day_tells_the_firm_once(
    client, owner, firm, django_capture_on_commit_callbacks
):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    mail.outbox.clear()
    for _ in range(3):
        response = _ask_for_new_link(client, token, django_capture_on_commit_callbacks)
        assert response.status_code == 200
    assert len(mail.outbox) == 1
    assert DeliveryEvent.objects.filter(kind="link_requested").count() == 1


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_a_void_invoices_link_offers_no_new_link(
    client, owner, firm, django_capture_on_commit_callbacks
):
    invoice, token = _sent_invoice(firm)
    invoice.status = Invoice.Status.VOID
    invoice.save()
    mail.outbox.clear()
    assert "for a new link" not in _pay(client, token).content.decode()
    response = _ask_for_new_link(client, token, django_capture_on_commit_callbacks)
    assert response.status_code == 410
    assert mail.outbox == []


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_a_working_link_asks_nothing_and_shows_the_invoice(
    client, owner, firm, django_capture_on_commit_callbacks
):
    _invoice, token = _sent_invoice(firm)
    mail.outbox.clear()
    response = _ask_for_new_link(client, token, django_capture_on_commit_callbacks)
    assert response.status_code == 303
    assert response["Location"] == reverse("invoicing:pay", args=[token])
    assert mail.outbox == []


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_a_wrong_token_cannot_ask_for_a_link(
    client, owner, firm, django_capture_on_commit_callbacks
):
    _sent_invoice(firm)
    mail.outbox.clear()
    response = _ask_for_new_link(client, "x" * 43, django_capture_on_commit_callbacks)
    assert response.status_code == 404
    assert "Alder" not in response.content.decode()
    assert mail.outbox == []


def test_asking_for_a_link_needs_the_pages_form_not_a_link(client, firm):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    strict = client.__class__(enforce_csrf_checks=True)
    response = strict.post(reverse("invoicing:pay_link_request", args=[token]))
    assert response.status_code == 403
    assert client.get(reverse("invoicing:pay_link_request", args=[token])).status_code == 405
    assert not DeliveryEvent.objects.filter(kind="link_requested").exists()


def test_another_invoices_token_shows_only_that_invoice(client, firm):
    _mine, _token = _sent_invoice(firm, description="Mine SECRET-A")
    _theirs, their_token = _sent_invoice(firm, description="Theirs LINE-B")
    body = _pay(client, their_token).content.decode()
    assert "Theirs LINE-B" in body
    assert "SECRET-A" not in body


@pytest.mark.usefixtures("tasks_run_inline")  # the email is sent by a task
def test_a_members_test_copy_offers_no_new_link(
    client, owner, firm, django_capture_on_commit_callbacks
):
    invoice, token = _sent_invoice(firm)
    invoice.deliveries.update(is_test=True)
    invoice.pay_links.update(revoked_at=timezone.now())
    mail.outbox.clear()
    assert "for a new link" not in _pay(client, token).content.decode()
    assert _ask_for_new_link(client, token, django_capture_on_commit_callbacks).status_code == 410
    assert mail.outbox == []


def test_the_request_stands_out_until_a_newer_email_answers_it(
    client, owner_client, firm, django_capture_on_commit_callbacks
):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    _ask_for_new_link(client, token, django_capture_on_commit_callbacks)
    assert "asked for a new one" in owner_client.get(invoice.get_absolute_url()).content.decode()

    first = invoice.deliveries.get()
    Delivery.objects.create(  # the firm clicked Resend
        firm=firm,
        invoice=invoice,
        client=first.client,
        address=first.address,
        normalized=first.normalized,
        status=Delivery.Status.SENT,
        verp_token="resent-after-request",
    )
    page = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "asked for a new one" not in page
    assert "The client asked for a new link" in page  # still on the timeline
