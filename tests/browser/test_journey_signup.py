"""Journey 1: a new firm signs up, verifies its email, and adds its first client, whose
pasted address carries an invisible character the form names before anything is saved."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from playwright.sync_api import expect

from portal.models import ContactAddress

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_verify_create_the_firm_and_add_a_client(journey, live_server):
    page = journey.new_page()
    page.goto(live_server.url + "/accounts/signup/")
    journey.step(page, "sign-up form")
    page.fill("input[name=email]", "nora@birch.test")
    page.fill("input[name=first_name]", "Nora")
    page.fill("input[name=last_name]", "Birch")
    page.fill("input[name=firm_name]", "Birch Accounting")
    page.fill("input[name=password1]", "a sturdy passphrase 42")
    page.fill("input[name=password2]", "a sturdy passphrase 42")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/accounts/confirm-email/")
    journey.step(page, "asked to verify the email")

    [message] = mail.outbox
    assert message.to == ["nora@birch.test"]
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group(0)
    page.goto(link)
    journey.step(page, "confirm the email")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/clients/")
    journey.step(page, "signed in to the new firm")
    expect(page.locator("body")).to_contain_text("Birch Accounting")

    page.goto(live_server.url + "/clients/new/")
    page.fill("input[name=display_name]", "Rowan Ltd")
    journey.step(page, "new client")
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r".*/clients/\d+/$"))
    journey.step(page, "client created")

    page.fill("main input[name=name]", "Ada Rowan")
    page.fill("main textarea[name=addresses]", "a@x.com; b@y.com; c\u200b@z.com")
    page.click("main button:text-is('Add contact')")
    error = page.locator("main .errorlist, main .error").first
    expect(error).to_contain_text("invisible character")
    expect(error).to_contain_text("U+200B")
    journey.step(page, "the form names the invisible character")
    assert not ContactAddress.objects.exists()

    page.fill("main textarea[name=addresses]", "a@x.com; b@y.com; c@z.com")
    page.click("main button:text-is('Add contact')")
    expect(page.locator(".addresses li")).to_have_count(3)
    journey.step(page, "contact saved with three addresses")
    assert sorted(ContactAddress.objects.values_list("address", flat=True)) == [
        "a@x.com",
        "b@y.com",
        "c@z.com",
    ]
    page.goto(live_server.url + "/clients/")
    expect(page.locator("main")).to_contain_text("Rowan Ltd")
    journey.step(page, "the client list")
