"""Pay by card through Stripe Checkout, and Stripe's webhook.

The real `stripe` SDK talks HTTP to a loopback server standing in for Stripe's API
(tests/servers/stripe_api.py). Webhook payloads are built as Stripe builds them and signed as
Stripe signs them: `Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
the endpoint's secret.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import secrets
import time
from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.models import Role
from invoicing.delivery.models import Delivery
from invoicing.models import FirmBillingSettings, Invoice, Payment
from invoicing.paylinks import pay_link_create
from invoicing.payments.recording import payment_record
from invoicing.payments.stripe import StripeCheckoutError, from_minor_units, to_minor_units
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, MembershipFactory
from tests.invoicing import factories
from tests.invoicing.factories import InvoiceLineFactory, invoice_with_lines
from tests.servers import stripe_api as stripe_fake
from tests.servers.stripe_api import WEBHOOK_SECRET

tasks_run_inline = factories.tasks_run_inline
stripe_server = stripe_fake.stripe_server
stripe_api = stripe_fake.stripe_api
WEBHOOK_URL = "/webhooks/stripe/"


def _sent_invoice(firm, *, unit_price: str = "120.00", **kwargs) -> tuple[Invoice, str]:
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    address = ContactAddressFactory(contact=ContactFactory(client=client))
    invoice = invoice_with_lines(client=client, lines=0, status=Invoice.Status.SENT, **kwargs)
    InvoiceLineFactory(invoice=invoice, description="Annual accounts", unit_price=unit_price)
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


def _checkout_url(token: str) -> str:
    return reverse("invoicing:stripe_checkout", args=[token])


def _pay_by_card(token: str) -> tuple[HttpClient, object]:
    """Open the Pay Now page and press "Pay by card", CSRF token and all, as a browser does."""
    browser = HttpClient(enforce_csrf_checks=True)
    page = browser.get(reverse("invoicing:pay", args=[token])).content.decode()
    action = re.search(r'<form method="post" action="([^"]+)">', page)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert action and csrf, "the page offers no card payment form"
    return browser, browser.post(action.group(1), {"csrfmiddlewaretoken": csrf.group(1)})


def _session(invoice: Invoice, link_id: int, **overrides: object) -> dict[str, object]:
    """A completed Checkout Session as Stripe puts it in the event."""
    session_id = "cs_test_" + secrets.token_hex(24)
    session: dict[str, object] = {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": 12000,
        "amount_total": 12000,
        "client_reference_id": str(invoice.pk),
        "currency": "eur",
        "livemode": False,
        "metadata": {"invoice_id": str(invoice.pk), "pay_link_id": str(link_id)},
        "mode": "payment",
        "payment_intent": "pi_" + secrets.token_hex(12),
        "payment_status": "paid",
        "status": "complete",
        "url": None,
    }
    session.update(overrides)
    return session


def _event(session: dict[str, object], kind: str = "checkout.session.completed") -> str:
    return json.dumps(
        {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()),
            "data": {"object": session},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        },
        indent=2,  # Stripe sends pretty-printed JSON: the signature covers the exact bytes
    )


def _signature(payload: str, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _deliver(payload: str, signature: str | None = None):
    # A browser-like client that enforces CSRF: the endpoint must not depend on a CSRF token.
    return HttpClient(enforce_csrf_checks=True).post(
        WEBHOOK_URL,
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": _signature(payload) if signature is None else signature},
    )


# --- starting a checkout ----------------------------------------------------------------


def test_it_offers_card_payment_beside_the_firms_instructions(client, firm, stripe_api):
    FirmBillingSettings.objects.create(firm=firm, payment_instructions="IBAN FI00 1234")
    _invoice, token = _sent_invoice(firm)
    body = client.get(reverse("invoicing:pay", args=[token])).content.decode()
    assert "Pay by card" in body
    assert f'action="{_checkout_url(token)}"' in body
    assert "IBAN FI00 1234" in body
    assert stripe_api.requests == []  # opening the page creates no session


def test_it_creates_a_checkout_session_and_redirects_to_it(firm, stripe_api, settings):
    settings.SITE_URL = "https://portal.example.com"
    invoice, token = _sent_invoice(firm, currency="EUR")
    link = invoice.pay_links.get()
    _browser, response = _pay_by_card(token)

    (sent,) = stripe_api.requests
    assert response.status_code == 303
    assert re.fullmatch(r"https://checkout\.stripe\.com/c/pay/cs_test_\w+#loopback", response.url)
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["authorization"] == "Bearer sk_test_portal_loopback"
    assert sent.headers["idempotency-key"].startswith(f"portal-checkout-{link.pk}-EUR-12000-")
    pay_url = "https://portal.example.com" + reverse("invoicing:pay", args=[token])
    assert sent.form == {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "eur",
        "line_items[0][price_data][unit_amount]": "12000",
        "line_items[0][price_data][product_data][name]": (
            f"Invoice #{invoice.number} from Alder & Birch Accounting"
        ),
        "success_url": pay_url + "?checkout=success",
        "cancel_url": pay_url,
        "client_reference_id": str(invoice.pk),
        "metadata[invoice_id]": str(invoice.pk),
        "metadata[pay_link_id]": str(link.pk),
        "payment_intent_data[metadata][invoice_id]": str(invoice.pk),
        "payment_intent_data[metadata][pay_link_id]": str(link.pk),
    }
    assert not Payment.objects.exists()  # nothing is paid until Stripe says so


def test_it_asks_only_for_what_is_still_open(firm, stripe_api):
    invoice, token = _sent_invoice(firm)
    payment_record(invoice=invoice, amount=Decimal("20.50"), reference="BANK-1")
    _pay_by_card(token)
    (sent,) = stripe_api.requests
    assert sent.form["line_items[0][price_data][unit_amount]"] == "9950"


def test_a_second_click_gets_the_same_session(firm, stripe_api):
    _invoice, token = _sent_invoice(firm)
    _browser, first = _pay_by_card(token)
    _browser, second = _pay_by_card(token)
    assert first.url == second.url
    keys = {sent.headers["idempotency-key"] for sent in stripe_api.requests}
    assert len(keys) == 1


def test_a_client_switching_language_is_not_refused_by_stripe(firm, stripe_api):
    # Stripe answers 400 to a key replayed with other parameters; the item's name is
    # translated, so each language gets its own key.
    _invoice, token = _sent_invoice(firm)
    HttpClient(headers={"Accept-Language": "en"}).post(_checkout_url(token))
    response = HttpClient(headers={"Accept-Language": "fi"}).post(_checkout_url(token))
    assert response.status_code == 303
    names = [
        sent.form["line_items[0][price_data][product_data][name]"] for sent in stripe_api.requests
    ]
    assert names[0] != names[1]


def test_a_paid_invoice_is_not_sent_to_checkout(client, firm, stripe_api):
    invoice, token = _sent_invoice(firm)
    payment_record(invoice=invoice, amount=Decimal("120.00"), reference="BANK-2")
    response = client.post(_checkout_url(token))
    assert response.status_code == 303
    assert response.url == reverse("invoicing:pay", args=[token])
    assert stripe_api.requests == []


def test_a_post_without_the_pages_csrf_token_is_refused(firm, stripe_api):
    _invoice, token = _sent_invoice(firm)
    response = HttpClient(enforce_csrf_checks=True).post(_checkout_url(token))
    assert response.status_code == 403
    assert stripe_api.requests == []


def test_opening_the_checkout_url_does_nothing(client, firm, stripe_api):
    _invoice, token = _sent_invoice(firm)
    response = client.get(_checkout_url(token))
    assert response.status_code == 405
    assert stripe_api.requests == []


def test_a_wrong_token_is_not_found(client, firm, stripe_api):
    _sent_invoice(firm)
    response = client.post(_checkout_url("x" * 43))
    assert response.status_code == 404
    assert "Alder" not in response.content.decode()
    assert stripe_api.requests == []


def test_a_revoked_link_cannot_start_a_checkout(client, firm, stripe_api):
    invoice, token = _sent_invoice(firm)
    invoice.pay_links.update(revoked_at=timezone.now())
    response = client.post(_checkout_url(token))
    assert response.status_code == 410
    assert "no longer valid" in response.content.decode()
    assert stripe_api.requests == []


def test_an_expired_link_cannot_start_a_checkout(client, firm, stripe_api, settings):
    settings.PAY_LINK_DAYS = 60
    _invoice, token = _sent_invoice(firm)
    with freeze_time(timezone.now() + datetime.timedelta(days=61)):
        response = client.post(_checkout_url(token))
    assert response.status_code == 410
    assert stripe_api.requests == []


def test_a_void_invoice_cannot_start_a_checkout(client, firm, stripe_api):
    invoice, token = _sent_invoice(firm)
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.VOID)
    assert client.post(_checkout_url(token)).status_code == 410
    assert stripe_api.requests == []


def test_when_stripe_refuses_the_client_is_told_and_nothing_is_charged(client, firm, stripe_api):
    _invoice, token = _sent_invoice(firm)
    stripe_api.fail_with(400, "invalid_request_error", "Your account cannot accept payments.")
    response = client.post(_checkout_url(token))
    assert response.status_code == 502
    body = response.content.decode()
    assert "Card payment is not available right now" in body
    assert reverse("invoicing:pay", args=[token]) in body


def test_the_client_returning_from_checkout_is_not_offered_to_pay_again(client, firm, stripe_api):
    _invoice, token = _sent_invoice(firm)
    body = client.get(reverse("invoicing:pay", args=[token]) + "?checkout=success").content
    assert b"Your card payment is being confirmed" in body
    assert b"Pay by card" not in body


def test_card_payment_is_hidden_without_a_stripe_key(client, firm, settings):
    settings.STRIPE_SECRET_KEY = ""
    _invoice, token = _sent_invoice(firm)
    body = client.get(reverse("invoicing:pay", args=[token])).content.decode()
    assert "Pay by card" not in body
    assert "How to pay" in body  # the offline instructions remain
    assert client.post(_checkout_url(token)).status_code == 404
    payload = json.dumps({"type": "checkout.session.completed"})
    assert _deliver(payload).status_code == 404


# --- the webhook ------------------------------------------------------------------------


def test_a_signed_completed_event_marks_the_invoice_paid_and_tells_the_owners(
    firm, owner, stripe_api, django_capture_on_commit_callbacks, tasks_run_inline
):
    MembershipFactory(firm=firm, role=Role.OWNER, user__email="second-owner@alder.test")
    MembershipFactory(firm=firm, role=Role.STAFF, user__email="staff@alder.test")
    invoice, _token = _sent_invoice(firm)
    session = _session(invoice, invoice.pay_links.get().pk)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = _deliver(_event(session))
    assert response.status_code == 200
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert invoice.paid_at is not None
    payment = Payment.objects.get()
    assert (payment.provider, payment.reference, payment.amount, payment.currency) == (
        "stripe",
        session["id"],
        Decimal("120.00"),
        "EUR",
    )
    assert payment.recorded_by is None
    (notice,) = mail.outbox
    assert sorted(notice.to) == ["owner@alder.test", "second-owner@alder.test"]
    assert notice.subject == f"Invoice #{invoice.number} for Birch Dental is paid"


def test_the_same_event_twice_records_one_payment(
    firm, owner, stripe_api, django_capture_on_commit_callbacks, tasks_run_inline
):
    invoice, _token = _sent_invoice(firm)
    payload = _event(_session(invoice, invoice.pay_links.get().pk))
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        first = _deliver(payload)
    with django_capture_on_commit_callbacks(execute=True):
        second = _deliver(payload)
    assert (first.status_code, second.status_code) == (200, 200)
    assert Payment.objects.count() == 1
    assert len(mail.outbox) == 1  # the owners are told once


def test_a_later_async_success_for_the_same_session_records_nothing_more(firm, stripe_api):
    invoice, _token = _sent_invoice(firm)
    session = _session(invoice, invoice.pay_links.get().pk)
    assert _deliver(_event(session)).status_code == 200
    late = _event(session, kind="checkout.session.async_payment_succeeded")
    assert _deliver(late).status_code == 200
    assert Payment.objects.count() == 1


def test_a_delayed_payment_is_recorded_when_it_succeeds(firm, stripe_api):
    invoice, _token = _sent_invoice(firm)
    session = _session(invoice, invoice.pay_links.get().pk, payment_status="unpaid")
    assert _deliver(_event(session)).status_code == 200
    assert not Payment.objects.exists()  # SEPA debit: completed, but no money yet
    session["payment_status"] = "paid"
    assert _deliver(_event(session, "checkout.session.async_payment_succeeded")).status_code == 200
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID


def test_a_part_payment_leaves_the_invoice_open(firm, stripe_api):
    invoice, _token = _sent_invoice(firm)
    session = _session(invoice, invoice.pay_links.get().pk, amount_total=5000)
    assert _deliver(_event(session)).status_code == 200
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT
    assert Payment.objects.get().amount == Decimal("50.00")


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="missing"),
        pytest.param("t=1,v1=00", id="garbage"),
        pytest.param("wrong-secret", id="wrong-secret"),
        pytest.param("stale", id="older-than-five-minutes"),
        pytest.param("other-body", id="signed-another-body"),
    ],
)
def test_an_event_without_a_valid_signature_is_refused(firm, stripe_api, signature):
    invoice, _token = _sent_invoice(firm)
    payload = _event(_session(invoice, invoice.pay_links.get().pk))
    header = {
        "wrong-secret": _signature(payload, secret="whsec_someone_else"),
        "stale": _signature(payload, at=int(time.time()) - 301),
        "other-body": _signature(payload.replace("12000", "1")),
    }.get(signature, signature)
    response = _deliver(payload, signature=header)
    assert response.status_code == 400
    assert not Payment.objects.exists()
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT


def test_an_event_for_an_unknown_invoice_is_acknowledged(firm, stripe_api):
    invoice, _token = _sent_invoice(firm)
    session = _session(invoice, 1, metadata={"invoice_id": "987654321", "pay_link_id": "1"})
    assert _deliver(_event(session)).status_code == 200
    foreign = _session(invoice, 1, metadata={})  # another app's session on the same account
    assert _deliver(_event(foreign)).status_code == 200
    assert not Payment.objects.exists()


def test_other_event_types_are_acknowledged_and_ignored(firm, stripe_api):
    invoice, _token = _sent_invoice(firm)
    session = _session(invoice, invoice.pay_links.get().pk)
    assert _deliver(_event(session, "checkout.session.expired")).status_code == 200
    assert not Payment.objects.exists()


def test_a_payment_for_a_voided_invoice_is_kept_and_shown_to_the_owner(
    firm, owner, owner_client, stripe_api
):
    invoice, _token = _sent_invoice(firm)
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.VOID)

    response = _deliver(_event(_session(invoice, 1)))

    assert (response.status_code, response.content) == (200, b"recorded_needs_attention")
    payment = Payment.objects.get()
    assert (payment.amount, payment.problem_code) == (Decimal("120.00"), "payment.void_invoice")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID
    page = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert 'data-problem="payment.void_invoice"' in page
    assert "Paid on a void invoice" in page


def test_a_payment_in_another_currency_is_kept_but_does_not_settle_the_invoice(
    firm, owner, owner_client, stripe_api
):
    invoice, _token = _sent_invoice(firm)

    assert _deliver(_event(_session(invoice, 1, currency="usd"))).status_code == 200

    payment = Payment.objects.get()
    assert (payment.amount, payment.currency, payment.problem_code) == (
        Decimal("120.00"),
        "USD",
        "payment.currency_mismatch",
    )
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT
    page = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "Paid in another currency" in page


def test_a_second_checkout_paid_on_a_paid_invoice_is_kept_as_an_overpayment(
    firm, owner, stripe_api, django_capture_on_commit_callbacks
):
    invoice, _token = _sent_invoice(firm)
    with django_capture_on_commit_callbacks():
        _deliver(_event(_session(invoice, 1)))
        _deliver(_event(_session(invoice, 1)))

    assert sorted(Payment.objects.values_list("problem_code", flat=True)) == [
        "",
        "payment.overpaid",
    ]
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID


def test_a_card_payment_on_an_invoice_whose_send_has_no_outcome_yet_is_recorded(
    firm, owner, stripe_api, django_capture_on_commit_callbacks, tasks_run_inline
):
    # The invoice leaves "draft" only when its group is recorded; the Pay Now link works
    # from the claim. A sender that dies in between leaves it "draft" for good.
    from invoicing.delivery.sender import _group_claim, deliveries_sending_expire, sending_lease

    client = ClientFactory(firm=firm, display_name="Birch Dental")
    address = ContactAddressFactory(contact=ContactFactory(client=client))
    invoice = invoice_with_lines(client=client, lines=0)
    InvoiceLineFactory(invoice=invoice, unit_price="120.00")
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address=address.address,
        normalized=address.normalized,
        verp_token="tokdraftpay00001",
    )
    group = _group_claim([delivery.pk])  # ... the email leaves, and the worker dies
    deliveries_sending_expire(now=timezone.now() + sending_lease() * 2)
    token = group.tokens[delivery.pk]

    _browser, redirect = _pay_by_card(token)
    assert redirect.status_code == 303  # off to Stripe's page: the client pays there
    assert len(stripe_api.requests) == 1
    session = _session(invoice, invoice.pay_links.get().pk)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = _deliver(_event(session))

    assert (response.status_code, response.content) == (200, b"recorded")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert Payment.objects.get().amount == Decimal("120.00")
    assert len(mail.outbox) == 1  # the owner is told it was paid


def test_the_webhook_takes_only_post(client, stripe_api):
    assert client.get(WEBHOOK_URL).status_code == 405


def test_the_webhook_waits_for_its_secret(firm, stripe_api, settings):
    # Stripe keeps retrying a 5xx for days: the event is not lost while the secret is missing.
    settings.STRIPE_WEBHOOK_SECRET = ""
    invoice, _token = _sent_invoice(firm)
    assert _deliver(_event(_session(invoice, 1))).status_code == 503
    assert not Payment.objects.exists()


# --- amounts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("120.00", "EUR", 12000), ("0.05", "usd", 5), ("1500.00", "JPY", 1500), ("1.25", "KWD", 1250)],
)
def test_amounts_are_sent_in_the_currencys_smallest_unit(amount, currency, minor):
    assert to_minor_units(Decimal(amount), currency) == minor
    assert from_minor_units(minor, currency) == Decimal(amount)


def test_an_amount_the_currency_cannot_express_is_never_rounded():
    with pytest.raises(StripeCheckoutError):
        to_minor_units(Decimal("1500.50"), "JPY")
