"""Every page the demo owner uses fits a 360 px phone: nothing runs off the right edge, and
wide tables scroll inside themselves with their amounts reachable."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_token_hash
from portal.models import Client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 360, "height": 740}
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture
def phone(browser, live_server, settings):
    settings.DEBUG = True
    call_command("seed_demo", clients=3)
    context = browser.new_context(viewport=PHONE, locale="en-GB")
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=login]", "owner@demo.test")
    page.fill("input[name=password]", "demo-portal-2026")
    page.click("form button[type=submit]:not(.small)")
    page.wait_for_url("**/clients/")
    yield page
    context.close()


def _pages() -> list[str]:
    invoice = Invoice.objects.filter(status=Invoice.Status.PAID).first()
    client = Client.objects.get(display_name="Nowak Bakery")
    return [
        reverse("portal:client_list"),
        client.get_absolute_url(),
        reverse("mailsync:client_email", args=[client.pk]),
        reverse("invoicing:invoice_list"),
        invoice.get_absolute_url(),
        reverse("invoicing:invoice_print", args=[invoice.pk]),
        reverse("invoicing:suppressions"),
        reverse("invoicing:billing_settings"),
        reverse("troubleshooting:dashboard"),
        reverse("accounts:my_account"),
        reverse("accounts:settings"),
        reverse("troubleshooting:status"),
    ]


def test_no_page_runs_off_a_360_px_screen(phone, live_server):
    too_wide = {}
    for path in _pages():
        phone.goto(live_server.url + path)
        overflow = phone.evaluate(OVERFLOW)
        if overflow > 0:
            too_wide[path] = overflow
    assert too_wide == {}


def test_the_nav_links_are_all_on_screen(phone, live_server):
    phone.goto(live_server.url + reverse("portal:client_list"))
    for link in phone.locator(".mainnav a").all():
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


def test_pay_now_shows_its_total_on_a_phone(browser, live_server, settings):
    settings.DEBUG = True
    call_command("seed_demo", clients=3)
    link = PayLink.objects.filter(invoice__status=Invoice.Status.SENT).first()
    token = "phone-test-token-" + "x" * 30
    PayLink.objects.filter(pk=link.pk).update(token_hash=pay_token_hash(token))
    context = browser.new_context(viewport=PHONE, locale="en-GB")
    page = context.new_page()
    page.goto(live_server.url + reverse("invoicing:pay", args=[token]))
    assert page.evaluate(OVERFLOW) <= 0
    total = page.locator("table.lines tfoot th.num")
    total.scroll_into_view_if_needed()
    box = total.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    context.close()
