"""Firms can require two-factor authentication for owners; signing in with TOTP works for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from django.test import Client as HttpClient
from django.urls import reverse

from tests.factories import PASSWORD


def _code(secret: str) -> str:
    """The code an authenticator app shows now (the middle of allauth's tolerated window)."""
    counters = list(yield_hotp_counters_from_time())
    return format_hotp_value(hotp_value(secret, counters[len(counters) // 2]))


def _sign_in(email: str) -> tuple[HttpClient, object]:
    http = HttpClient()
    response = http.post(reverse("account_login"), {"login": email, "password": PASSWORD})
    return http, response


@pytest.fixture
def mfa_firm(firm):
    firm.owners_must_use_mfa = True
    firm.save()
    return firm


def test_an_owner_without_mfa_is_sent_to_set_it_up_first(mfa_firm, owner_client):
    response = owner_client.get(reverse("portal:client_list"))
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_activate_totp")
    response = owner_client.get(reverse("accounts:members"), follow=True)
    assert "Your firm requires two-factor authentication for owners" in unescape(
        response.content.decode()
    )


def test_the_owner_can_still_sign_out(mfa_firm, owner_client):
    assert owner_client.post(reverse("account_logout")).status_code == 302
    assert "_auth_user_id" not in owner_client.session


def test_staff_are_not_asked_for_mfa(mfa_firm, staff_client):
    assert staff_client.get(reverse("portal:client_list")).status_code == 200


def test_a_firm_that_switched_it_off_is_not_asked(firm, owner_client, settings):
    settings.MFA_REQUIRED_FOR_OWNERS = True
    firm.owners_must_use_mfa = False
    firm.save()
    assert owner_client.get(reverse("portal:client_list")).status_code == 200


def test_a_firm_that_never_chose_follows_the_platform_default(firm, owner_client, settings):
    settings.MFA_REQUIRED_FOR_OWNERS = True
    assert owner_client.get(reverse("portal:client_list")).status_code == 302
    settings.MFA_REQUIRED_FOR_OWNERS = False
    assert owner_client.get(reverse("portal:client_list")).status_code == 200


@pytest.mark.parametrize(("debug", "expected"), [("0", "True"), ("1", "False")])
def test_the_platform_default_is_on_in_production_only(debug, expected):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MFA_REQUIRED_FOR_OWNERS", "DEBUG", "SECRET_KEY")
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.MFA_REQUIRED_FOR_OWNERS)",
        ],
        env={
            **env,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": debug,
            "SECRET_KEY": "a-production-like-key",
        },
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == expected


def test_an_owner_switches_the_requirement_in_firm_settings(firm, owner_client):
    response = owner_client.post(
        reverse("accounts:firm_profile"), {"name": firm.name, "owners_must_use_mfa": "on"}
    )
    assert response.status_code == 302
    firm.refresh_from_db()
    assert firm.owners_must_use_mfa is True
    # From now on this owner (who has no authenticator) is sent to set one up.
    assert owner_client.get(reverse("portal:client_list"))["Location"] == reverse(
        "mfa_activate_totp"
    )


def test_an_owner_sets_up_totp_when_asked_and_then_works(mfa_firm, owner):
    http, response = _sign_in(owner.user.email)
    assert http.get(reverse("portal:client_list"))["Location"] == reverse("mfa_activate_totp")
    # allauth asks for the password again before adding an authenticator; that page is open.
    asked = http.get(reverse("mfa_activate_totp"))
    assert asked["Location"].startswith(reverse("account_reauthenticate"))
    http.post(asked["Location"], {"password": PASSWORD})
    page = http.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    # The secret the page shows for typing into an authenticator app (beside the QR code).
    secret = re.search(r"value=\"([A-Z2-7]{32})\"", page.content.decode())[1]
    response = http.post(reverse("mfa_activate_totp"), {"code": _code(secret)})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=owner.user, type="totp").exists()
    assert http.get(reverse("portal:client_list")).status_code == 200


def test_an_owner_signs_in_with_password_and_a_totp_code(mfa_firm, owner):
    secret = generate_totp_secret()
    TOTP.activate(owner.user, secret)
    http, response = _sign_in(owner.user.email)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    # Password alone is not a session yet.
    assert http.get(reverse("portal:client_list")).status_code == 302
    assert "_auth_user_id" not in http.session
    response = http.post(reverse("mfa_authenticate"), {"code": _code(secret)})
    assert response.status_code == 302
    assert http.get(reverse("portal:client_list")).status_code == 200


def test_a_wrong_totp_code_does_not_sign_in(mfa_firm, owner):
    secret = generate_totp_secret()
    TOTP.activate(owner.user, secret)
    http, _response = _sign_in(owner.user.email)
    wrong = f"{(int(_code(secret)) + 1) % 1_000_000:06d}"
    response = http.post(reverse("mfa_authenticate"), {"code": wrong})
    assert response.status_code == 200
    assert "_auth_user_id" not in http.session
