"""A person in a real browser: sign in as the demo owner, find a client, open it."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from portal.models import Client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo(settings):
    settings.DEBUG = True
    call_command("seed_demo")


def test_the_demo_owner_signs_in_searches_and_opens_a_client(demo, live_server, page):
    target = Client.objects.order_by("display_name")[7]
    page.goto(live_server.url + "/")
    page.fill("input[name=login]", "owner@demo.test")
    page.fill("input[name=password]", "demo-portal-2026")
    page.click("form button[type=submit]:not(.small)")
    page.wait_for_url("**/clients/")
    assert page.locator("h1").inner_text() == "Clients"

    page.fill("#client-search", target.display_name)
    expect(page.locator("#client-results tbody tr")).to_have_count(1)
    page.click(f"#client-results a:text-is('{target.display_name}')")
    page.wait_for_url(f"**/clients/{target.pk}/")
    assert page.locator("h1").inner_text() == target.display_name
    assert page.locator(".addresses li").count() >= 1


def test_the_language_switcher_changes_the_interface(demo, live_server, page):
    page.goto(live_server.url + "/accounts/login/")
    page.select_option("#language-select", "fi")
    page.wait_for_load_state("networkidle")
    assert page.locator("html").get_attribute("lang") == "fi"
