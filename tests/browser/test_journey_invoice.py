"""Journeys 5 and 6: an invoice whose address hard-bounces is fixed in place from Problems
and resent; the client then opens Pay Now from the email it received, with no login, on a
phone and on a desktop, and pays."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from accounts.models import Role
from invoicing.delivery.models import Delivery
from invoicing.models import FirmBillingSettings, Invoice, Payment
from tests.browser.helpers import sign_in
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, MembershipFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures
from tests.servers import stripe_api as stripe_fake
from tests.servers.smtp import UNKNOWN

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
stripe_server = stripe_fake.stripe_server
stripe_api = stripe_fake.stripe_api
tasks_run_inline = factories.tasks_run_inline

PAY_LINK = re.compile(r"(http://[^/\s]+/pay/[A-Za-z0-9_-]{43}/)")


@pytest.fixture
def billing(firm, settings, live_server, smtp, stripe_api, tasks_run_inline):
    """A firm that takes payment by bank transfer and by card, sending over real SMTP, its
    Pay Now links pointing at the live server, its tasks run as a worker would."""
    settings.SITE_URL = live_server.url
    FirmBillingSettings.objects.create(
        firm=firm, payment_instructions="Bank transfer to IBAN FI21 1234 5600 0007 85"
    )
    owner = MembershipFactory(firm=firm, role=Role.OWNER, user__email="owner@alder.test")
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client, name="Anna"), address=UNKNOWN)
    return owner, client


def test_a_hard_bounce_is_explained_fixed_in_place_resent_and_cleared(
    journey, live_server, billing, smtp
):
    owner, client = billing
    page = journey.new_page()
    sign_in(page, live_server.url, owner.user.email)

    page.goto(live_server.url + "/invoices/new/")
    page.select_option("select[name=client]", label="Birch Dental")
    page.fill("input[name=lines-0-description]", "Annual accounts 2026")
    page.fill("input[name=lines-0-quantity]", "1")
    page.fill("input[name=lines-0-unit_price]", "480.00")
    journey.step(page, "new invoice with a line")
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r".*/invoices/\d+/$"))
    journey.step(page, "draft invoice")

    page.click("button:text-is('Send to client')")
    expect(page.locator("main")).to_contain_text("No recipient accepted this invoice")
    journey.step(page, "the server refused the address")
    assert smtp.received == []

    page.goto(f"{live_server.url}/clients/{client.pk}/problems/")
    problem = page.locator("article.problem", has_text=UNKNOWN)
    expect(problem).to_contain_text("does not exist")
    journey.step(page, "problems explains the bounce")

    problem.locator("input[name=address]").fill("anna@client.test")
    problem.locator("button:text-is('Save and resend')").click()
    expect(page.locator(".messages")).to_contain_text("anna@client.test")
    journey.step(page, "address fixed and invoice resent")
    assert [r.rcpt_tos for r in smtp.received] == [["anna@client.test"]]
    assert Delivery.objects.get(address="anna@client.test").status == Delivery.Status.SENT
    expect(page.locator("article.problem", has_text=UNKNOWN)).to_have_count(0)

    page.goto(live_server.url + "/problems/")
    expect(page.locator("article.problem", has_text=UNKNOWN)).to_have_count(0)
    journey.step(page, "the problem is cleared")

    page.goto(live_server.url + "/invoices/")
    expect(page.locator("main")).to_contain_text("Birch Dental")
    journey.step(page, "the invoice list")


def _sent_to_the_client(firm, smtp) -> tuple[Invoice, str]:
    """Two invoices sent through the portal to two clients; the first one's Pay Now link,
    read from the email its client received."""
    from invoicing.sending import invoice_send

    client = ClientFactory(firm=firm, display_name="Aspen Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="aspen@client.test")
    mine = invoice_with_lines(client=client, lines=1)
    mine.lines.update(description="Payroll, November", unit_price="240.00")
    other_client = ClientFactory(firm=firm, display_name="Rowan Ltd")
    ContactAddressFactory(contact=ContactFactory(client=other_client), address="rowan@client.test")
    other = invoice_with_lines(client=other_client, lines=1)
    other.lines.update(description="ROWAN-ONLY LINE")
    invoice_send(invoice=mine)
    invoice_send(invoice=other)
    [email] = [r for r in smtp.received if r.rcpt_tos == ["aspen@client.test"]]
    body = email.message.get_body(("plain",)).get_content()
    return mine, PAY_LINK.search(body).group(1)


def _stripe_says_paid(base_url: str, stripe_api, invoice: Invoice) -> None:
    """Stripe's webhook for the Checkout Session the portal created, signed as Stripe signs
    it, posted over HTTP to the live server."""
    [created] = [r for r in stripe_api.requests if r.path == "/v1/checkout/sessions"]
    session = {
        "id": "cs_test_" + secrets.token_hex(24),
        "object": "checkout.session",
        "amount_subtotal": 24000,
        "amount_total": 24000,
        "client_reference_id": str(invoice.pk),
        "currency": "eur",
        "livemode": False,
        "metadata": {
            "invoice_id": created.form["metadata[invoice_id]"],
            "pay_link_id": created.form["metadata[pay_link_id]"],
        },
        "mode": "payment",
        "payment_intent": "pi_" + secrets.token_hex(12),
        "payment_status": "paid",
        "status": "complete",
        "url": None,
    }
    payload = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()),
            "data": {"object": session},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": "checkout.session.completed",
        }
    )
    at = int(time.time())
    mac = hmac.new(stripe_fake.WEBHOOK_SECRET.encode(), f"{at}.{payload}".encode(), hashlib.sha256)
    request = urllib.request.Request(
        base_url + "/webhooks/stripe/",
        data=payload.encode(),
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": f"t={at},v1={mac.hexdigest()}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def _fits(page) -> bool:
    return page.evaluate(
        "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def test_the_client_opens_pay_now_from_the_email_on_a_phone_and_a_desktop_and_pays(
    journey, live_server, billing, smtp, stripe_api, firm
):
    invoice, link = _sent_to_the_client(firm, smtp)

    phone = journey.new_page(width=390, height=844)
    phone.goto(link)
    expect(phone.locator("h1")).to_have_text(firm.name)
    main = phone.locator("main")
    expect(main).to_contain_text(f"Invoice #{invoice.number}")
    expect(main).to_contain_text("Payroll, November")
    expect(main).to_contain_text("240.00 EUR")
    expect(main).to_contain_text("IBAN FI21 1234 5600 0007 85")
    expect(main).not_to_contain_text("ROWAN-ONLY LINE")
    expect(main).not_to_contain_text("Rowan Ltd")
    expect(phone.locator("tfoot")).to_be_in_viewport()
    assert _fits(phone), "the Pay Now page scrolls sideways at 390 px"
    journey.step(phone, "pay now on a phone")

    desktop = journey.new_page()
    # Stripe's hosted checkout is not reachable from here: the browser lands on a stand-in.
    desktop.route(
        "https://checkout.stripe.com/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body="<!doctype html><html lang=en><title>Checkout</title><main><h1>Stripe Checkout"
            "</h1></main></html>",
        ),
    )
    desktop.goto(link)
    journey.step(desktop, "pay now on a desktop")
    desktop.click("button:text-is('Pay by card')")
    desktop.wait_for_url("https://checkout.stripe.com/**")
    _stripe_says_paid(live_server.url, stripe_api, invoice)
    desktop.goto(link + "?checkout=success")
    expect(desktop.locator("main")).to_contain_text("This invoice is paid. Thank you!")
    journey.step(desktop, "paid")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert Payment.objects.get().invoice == invoice

    tampered = link[:-2] + ("A" if link[-2] != "A" else "B") + "/"
    stranger = journey.new_page(width=390, height=844)
    stranger.goto(tampered)
    expect(stranger.locator("main")).to_contain_text("ask for a new link")
    expect(stranger.locator("body")).not_to_contain_text(firm.name)
    journey.step(stranger, "a tampered link")
