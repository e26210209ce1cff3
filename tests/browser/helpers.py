"""Steps several journeys share."""

from __future__ import annotations

from tests.factories import PASSWORD


def sign_in(page, base_url: str, email: str, password: str = PASSWORD) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]:not(.small)")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
