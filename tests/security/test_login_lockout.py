"""Failed sign-ins are limited per client address and account together: a guesser who knows an
owner's email locks out only themselves, never the owner signing in from elsewhere."""

from __future__ import annotations

from html import unescape

from django.test import Client as HttpClient
from django.urls import reverse

from tests.factories import PASSWORD

GUESSER = "198.51.100.7"
OWNER_NETWORK = "203.0.113.20"


def _sign_in(http: HttpClient, email: str, password: str, address: str):
    return http.post(
        reverse("account_login"), {"login": email, "password": password}, REMOTE_ADDR=address
    )


def _guess_five_times(email: str) -> None:
    guesser = HttpClient()
    for n in range(5):
        response = _sign_in(guesser, email, f"wrong password {n}", GUESSER)
        assert response.status_code == 200


def test_five_wrong_passwords_limit_that_address_for_that_account(owner):
    _guess_five_times(owner.user.email)
    response = _sign_in(HttpClient(), owner.user.email, PASSWORD, GUESSER)
    assert response.status_code == 200  # the form again, not signed in
    body = unescape(response.content.decode())
    assert "Too many failed sign-ins to this account from your network" in body
    assert "can still sign in from another network" in body
    assert "_auth_user_id" not in response.wsgi_request.session


def test_the_owner_still_signs_in_from_another_address(owner):
    _guess_five_times(owner.user.email)
    http = HttpClient()
    response = _sign_in(http, owner.user.email, PASSWORD, OWNER_NETWORK)
    assert response.status_code == 302
    assert http.get(reverse("portal:client_list"), REMOTE_ADDR=OWNER_NETWORK).status_code == 200


def test_the_guessers_address_can_still_sign_in_to_other_accounts(owner, staff):
    _guess_five_times(owner.user.email)
    response = _sign_in(HttpClient(), staff.user.email, PASSWORD, GUESSER)
    assert response.status_code == 302


def test_one_address_guessing_many_accounts_is_limited_too(owner, staff):
    guesser = HttpClient()
    for n in range(10):
        _sign_in(guesser, f"someone{n}@alder.test", "wrong password", GUESSER)
    response = _sign_in(guesser, staff.user.email, PASSWORD, GUESSER)
    assert response.status_code == 200  # the form again, with the limit explained
    assert "Too many failed sign-ins" in unescape(response.content.decode())
    assert "_auth_user_id" not in guesser.session
