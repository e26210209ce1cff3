"""Actions that check a secret, reach out to a server or send mail are limited per member and
per firm: over budget the page answers 429, keeps what was typed and says when to retry.

Budgets are lowered through the RATE_LIMITS setting so each test needs only a few requests.
"""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import translation

from accounts.models import Role
from mailsync import crypto
from portal.ratelimits import RateLimited, hit
from tests.factories import ClientFactory, MembershipFactory
from tests.invoicing import factories as invoicing_factories
from tests.invoicing.factories import invoice_with_lines
from tests.mailsync.factories import MailboxConnectionFactory
from tests.security.conftest import BannerServer
from tests.servers.dovecot import free_port

tasks_run_inline = invoicing_factories.tasks_run_inline


@pytest.fixture
def budgets(settings):
    settings.RATE_LIMITS = {
        "password_check": (3, 5, 900),
        "account_test": (2, 3, 600),
        "send_test": (2, 3, 3600),
        "invoice_test": (2, 3, 3600),
        "invitation": (2, 3, 3600),
    }


def _signed_in(membership) -> HttpClient:
    http = HttpClient()
    http.force_login(membership.user)
    return http


def _test_account(http, port: int):
    return http.post(
        reverse("mailsync:credentials"),
        {
            "preset": "",
            "kind": "imap",
            "email_address": "ann@alder.test",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": "ann-kept-7731",
            "password": "pw",
            "smtp_host": "",
            "action": "test",
        },
    )


def test_test_account_is_limited_per_member_with_the_form_kept(owner_client, budgets):
    closed = free_port()
    assert _test_account(owner_client, closed).status_code == 200
    assert _test_account(owner_client, closed).status_code == 200

    response = _test_account(owner_client, closed)

    page = response.content.decode()
    assert response.status_code == 429
    assert "You have tried this too many times in a short while." in page
    assert "ann-kept-7731" in page  # what was typed is still there


def test_test_account_is_limited_per_firm_across_members(firm, owner, budgets):
    closed = free_port()
    first, second = _signed_in(owner), _signed_in(MembershipFactory(firm=firm, role=Role.STAFF))
    _test_account(first, closed)
    _test_account(first, closed)
    assert _test_account(second, closed).status_code == 200

    response = _test_account(second, closed)

    assert response.status_code == 429
    assert "Your firm has tried this too many times" in response.content.decode()


def test_another_firm_is_not_limited_by_this_one(owner_client, outsider_client, budgets):
    closed = free_port()
    for _attempt in range(3):
        _test_account(owner_client, closed)

    assert _test_account(outsider_client, closed).status_code == 200


def test_the_shared_mailbox_password_cannot_be_guessed_without_limit(
    owner_client, firm, budgets, fernet_key, banner_server: BannerServer
):
    shared = MailboxConnectionFactory(
        firm=firm, owner=None, host="imap.alder.test", secret=crypto.encrypt("right-pw")
    )

    def attempt(password: str):
        return owner_client.post(
            reverse("mailsync:shared_sending_addresses"),
            {
                "connection": shared.pk,
                "action": "server",
                "host": "127.0.0.1",
                "port": banner_server.port,
                "security": "none",
                "password": password,
            },
        )

    for guess in ("guess-1", "guess-2", "guess-3"):
        assert attempt(guess).status_code == 200

    response = attempt("right-pw")  # the right one, but over budget: not even checked

    assert response.status_code == 429
    assert "too many times" in response.content.decode()
    assert banner_server.accepted == 0


def test_send_a_test_to_myself_is_limited(owner_client, budgets):
    url = reverse("troubleshooting:send_test")
    owner_client.post(url)
    owner_client.post(url)

    response = owner_client.post(url, {"next": "/problems/"})

    assert response.status_code == 429
    assert response["Retry-After"].isdigit()
    assert len(mail.outbox) == 2


@pytest.mark.usefixtures("tasks_run_inline")
def test_invoice_test_sends_are_limited(
    staff_client, firm, budgets, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm))
    url = reverse("invoicing:invoice_send_test", args=[invoice.pk])
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(url)
        staff_client.post(url)
        response = staff_client.post(url)

    assert response.status_code == 429
    assert invoice.deliveries.count() == 2


def test_invitations_are_limited_with_the_form_kept(owner_client, budgets):
    url = reverse("accounts:invite")
    for n in range(2):
        owner_client.post(url, {"email": f"person{n}@alder.test", "role": Role.STAFF})

    response = owner_client.post(url, {"email": "kept.person@alder.test", "role": Role.STAFF})

    assert response.status_code == 429
    page = response.content.decode()
    assert "too many times" in page
    assert "kept.person@alder.test" in page


def test_the_message_is_in_the_members_language(budgets):
    with pytest.raises(RateLimited) as limited:
        for _attempt in range(3):
            hit("send_test", user_id=1, firm_id=1)

    english = limited.value.message
    with translation.override("pl"):
        polish = limited.value.message
    assert english != polish
