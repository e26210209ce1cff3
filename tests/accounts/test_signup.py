"""Sign-up, sign-in and MFA through django-allauth."""

from __future__ import annotations

import re

from django.core import mail
from django.urls import reverse

from accounts.models import Membership, Role, User
from tests.factories import PASSWORD


def _sign_up(client, email="new.owner@birch.test"):
    return client.post(
        reverse("account_signup"),
        {
            "email": email,
            "password1": "a sturdy passphrase 42",
            "password2": "a sturdy passphrase 42",
            "first_name": "Nora",
            "last_name": "Birch",
            "firm_name": "Birch Accounting",
        },
    )


def test_signing_up_creates_a_firm_with_the_new_user_as_owner(client, db):
    _sign_up(client)
    membership = Membership.objects.select_related("firm", "user").get()
    assert membership.firm.name == "Birch Accounting"
    assert membership.role == Role.OWNER
    assert membership.user.get_full_name() == "Nora Birch"


def test_signing_up_asks_to_verify_the_email_address(client, db):
    response = _sign_up(client)
    assert response["Location"] == reverse("account_email_verification_sent")
    assert mail.outbox[-1].to == ["new.owner@birch.test"]
    assert re.search(r"/accounts/confirm-email/\S+", mail.outbox[-1].body)


def test_users_have_no_username_and_sign_in_with_their_email(client, owner):
    response = client.post(
        reverse("account_login"), {"login": "OWNER@alder.test", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.get(reverse("portal:client_list")).status_code == 200
    assert not hasattr(User, "username") or User.username is None


def test_a_wrong_password_is_refused(client, owner):
    response = client.post(
        reverse("account_login"), {"login": "owner@alder.test", "password": "nope"}
    )
    assert response.status_code == 200
    assert "not correct" in response.content.decode()


def test_every_user_can_set_up_two_factor_authentication(owner_client):
    response = owner_client.get(reverse("mfa_activate_totp"))
    assert response.status_code in (200, 302)
    response = owner_client.get(reverse("mfa_index"))
    assert response.status_code == 200
    assert "Authenticator App" in response.content.decode()


def test_password_reset_sends_a_link(client, owner):
    client.post(reverse("account_reset_password"), {"email": "owner@alder.test"})
    assert "/accounts/password/reset/key/" in mail.outbox[-1].body
