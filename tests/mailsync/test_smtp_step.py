"""The SMTP step of "Test account" and send.smtp_auth_disabled, against real servers: Dovecot
for reading, aiosmtpd for sending (with an authenticator that answers like Microsoft 365 when
authenticated SMTP is switched off). No mocked servers."""

from __future__ import annotations

import smtplib
import warnings
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.urls import reverse

from mailsync.engine import mailbox_sync
from mailsync.errors import AUTH_FAILED, SMTP_AUTH_DISABLED, classify
from mailsync.forms.mailbox import ConnectionForm
from mailsync.models import MailboxConnection
from tests.mailsync.factories import MailboxConnectionFactory, fernet_key  # noqa: F401
from tests.servers.dovecot import free_port

CONNECT = reverse("mailsync:credentials")
PROBLEMS = reverse("troubleshooting:dashboard")
TENANT_REFUSAL = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
)
GUIDE_TITLE = "Sending from this mailbox is switched off by its provider"


class _SmtpServer:
    """aiosmtpd with AUTH PLAIN/LOGIN. ``users`` log in with their password; for those in
    ``smtp_auth_disabled`` the right password gets Microsoft 365's tenant refusal instead."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.smtp_auth_disabled: set[str] = set()
        self.port = free_port()

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            if not isinstance(auth_data, LoginPassword):
                return AuthResult(success=False, handled=False)
            login = auth_data.login.decode()
            if self.users.get(login) != auth_data.password.decode():
                return AuthResult(success=False, handled=False)  # 535 5.7.8 ...
            if login in self.smtp_auth_disabled:
                return AuthResult(success=False, handled=False, message=TENANT_REFUSAL)
            return AuthResult(success=True)

        self.controller = Controller(
            object(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
        )


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[_SmtpServer]:
    server = _SmtpServer()
    with warnings.catch_warnings():
        # aiosmtpd rightly warns about AUTH without TLS; on loopback in a test it is the point.
        warnings.simplefilter("ignore", UserWarning)
        server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture
def smtp(smtp_server, mailbox_user) -> _SmtpServer:
    """The SMTP server knows the mailbox user with the mailbox's password."""
    smtp_server.users[mailbox_user.name] = mailbox_user.password
    smtp_server.smtp_auth_disabled.discard(mailbox_user.name)
    return smtp_server


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr("mailsync.tasks.sync_mailbox.delay", calls.append)
    return calls


def _form(mailbox_user, smtp_server, **extra) -> dict:
    server = mailbox_user.server
    data = {
        "preset": "",
        "kind": "imap",
        "email_address": f"{mailbox_user.name}@firm.test",
        "host": server.host,
        "port": server.imap_port,
        "security": "none",
        "username": mailbox_user.name,
        "password": mailbox_user.password,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_server.port,
        "smtp_security": "none",
        "action": "test",
    }
    data.update(extra)
    return data


def _page(response) -> str:
    return response.content.decode()


# --- classification --------------------------------------------------------------------

SMTP_AUTH = smtplib.SMTPAuthenticationError


@pytest.mark.parametrize(
    ("exc", "step", "code"),
    [
        pytest.param(
            SMTP_AUTH(
                535,
                b"5.7.139 Authentication unsuccessful, "
                b"SmtpClientAuthentication is disabled for the Tenant. "
                b"Visit https://aka.ms/smtp_auth_disabled for more information.",
            ),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-tenant-smtp-auth-disabled",
        ),
        pytest.param(
            SMTP_AUTH(
                535,
                b"5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
                b"for the Mailbox.",
            ),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-mailbox-smtp-auth-disabled",
        ),
        pytest.param(
            SMTP_AUTH(
                535,
                b"5.7.139 Authentication unsuccessful, user is locked by your organization's "
                b"security defaults policy. Contact your administrator.",
            ),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-security-defaults",
        ),
        pytest.param(
            SMTP_AUTH(
                535,
                b"5.7.139 Authentication unsuccessful, the request did not meet the criteria "
                b"to be authenticated successfully. Contact your administrator.",
            ),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-conditional-access",
        ),
        pytest.param(
            SMTP_AUTH(535, b"5.7.3 Authentication unsuccessful [AM0PR02CA0001.eurprd02.prod]"),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-5.7.3-authentication-unsuccessful",
        ),
        pytest.param(
            SMTP_AUTH(535, b"5.7.3 SmtpClientAuthentication is disabled for the Mailbox"),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-5.7.3-smtpclientauthentication",
        ),
        pytest.param(
            SMTP_AUTH(
                535,
                b"5.7.139 Authentication unsuccessful, basic authentication is "
                b"disabled for the Tenant.",
            ),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-basic-auth-disabled-for-tenant",
        ),
        pytest.param(
            smtplib.SMTPResponseException(
                550, b"5.7.1 Access denied: the device is Quarantined by the tenant's policy"
            ),
            "smtp_login",
            SMTP_AUTH_DISABLED,
            id="m365-quarantined",
        ),
        # Not the provider's policy: keep their old meaning.
        pytest.param(
            SMTP_AUTH(535, b"5.7.8 Authentication credentials invalid"),
            "smtp_login",
            AUTH_FAILED,
            id="wrong-smtp-password",
        ),
        pytest.param(
            SMTP_AUTH(
                535, b"5.7.139 Authentication unsuccessful, the user credentials were incorrect."
            ),
            "smtp_login",
            AUTH_FAILED,
            id="m365-credentials-incorrect",
        ),
        pytest.param(
            SMTP_AUTH(535, b"5.7.8 Username and Password not accepted. BadCredentials"),
            "smtp_login",
            AUTH_FAILED,
            id="gmail-bad-credentials",
        ),
        pytest.param(
            SMTP_AUTH(534, b"5.7.9 Application-specific password required."),
            "smtp_login",
            "sync.two_factor",
            id="gmail-app-password",
        ),
        pytest.param(
            smtplib.SMTPResponseException(454, b"4.7.0 Temporary authentication failure"),
            "smtp_login",
            "sync.connection",
            id="temporary-failure",
        ),
    ],
)
def test_smtp_login_replies_are_classified(exc, step, code):
    error = classify(exc, step=step)

    assert error.code == code and error.step == step
    if code == SMTP_AUTH_DISABLED:
        assert not error.transient  # only an admin's change helps; never retried


def test_the_tenant_refusal_means_smtp_auth_disabled_only_when_logging_in_to_smtp():
    exc = SMTP_AUTH(535, TENANT_REFUSAL.removeprefix("535 ").encode())

    assert classify(exc, step="smtp_login").code == SMTP_AUTH_DISABLED
    assert classify(exc, step="smtp_connect").code == "sync.server_settings"


def test_the_detail_is_the_cleaned_server_reply():
    exc = SMTP_AUTH(535, TENANT_REFUSAL.removeprefix("535 ").encode())

    assert classify(exc, step="smtp_login").detail == TENANT_REFUSAL


# --- presets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("microsoft", ("smtp.office365.com", 587, "starttls")),
        ("gmail", ("smtp.gmail.com", 465, "ssl")),
        ("icloud", ("smtp.mail.me.com", 587, "starttls")),
        ("yahoo", ("smtp.mail.yahoo.com", 465, "ssl")),
        ("fastmail", ("smtp.fastmail.com", 465, "ssl")),
    ],
)
def test_a_preset_fills_in_its_smtp_server(preset, expected):
    form = ConnectionForm(
        {
            "preset": preset,
            "kind": "imap",
            "security": "ssl",
            "email_address": "a@x.test",
            "password": "p",
        }
    )

    assert form.is_valid(), form.errors
    data = form.cleaned_data
    assert (data["smtp_host"], data["smtp_port"], data["smtp_security"]) == expected
    assert form.checks_smtp


def test_other_servers_check_smtp_only_when_a_host_is_given():
    base = {"kind": "imap", "security": "ssl", "host": "mail.x.test", "email_address": "a@x.test"}
    base["password"] = "p"

    without = ConnectionForm(base)
    with_host = ConnectionForm({**base, "smtp_host": "smtp.x.test"})
    skipped = ConnectionForm({**base, "smtp_host": "smtp.x.test", "skip_smtp": "on"})

    assert without.is_valid() and not without.checks_smtp
    assert with_host.is_valid() and with_host.checks_smtp
    assert (with_host.cleaned_data["smtp_port"], with_host.cleaned_data["smtp_security"]) == (
        587,
        "starttls",
    )
    assert skipped.is_valid() and not skipped.checks_smtp


def test_reauthenticate_offers_the_providers_smtp_server(owner_client, owner, firm):
    connection = MailboxConnectionFactory(
        firm=firm, owner=owner.user, host="outlook.office365.com", port=993, security="ssl"
    )

    page = _page(owner_client.get(f"{CONNECT}?connection={connection.pk}"))

    assert 'value="smtp.office365.com"' in page and 'value="587"' in page


# --- Test account and Save ---------------------------------------------------------------


def test_test_account_shows_the_smtp_login_refused_by_the_tenant(owner_client, mailbox_user, smtp):
    smtp.smtp_auth_disabled.add(mailbox_user.name)

    response = owner_client.post(CONNECT, _form(mailbox_user, smtp))

    page = _page(response)
    assert response.status_code == 200
    for step in ("Connect to the server", "Log in", "List folders", "Connect to the sending"):
        assert f"✓ {step}" in page
    assert 'data-step="smtp_login">✗ Log in to send (SMTP)' in page
    assert TENANT_REFUSAL in page and "send.smtp_auth_disabled" in page
    assert "Ask your IT administrator" in page and "Authenticated SMTP (SMTP AUTH)" in page
    assert mailbox_user.password not in page
    assert not MailboxConnection.objects.exists()  # a test never saves


def test_a_mailbox_whose_tenant_refuses_smtp_can_be_saved_and_the_problem_is_recorded(
    owner_client, owner, mailbox_user, smtp, queued, django_capture_on_commit_callbacks
):
    smtp.smtp_auth_disabled.add(mailbox_user.name)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(CONNECT, _form(mailbox_user, smtp, action="save"))

    assert response.status_code == 302
    connection = MailboxConnection.objects.get()
    assert connection.owner == owner.user
    assert connection.problem_code == "send.smtp_auth_disabled"
    assert connection.problem_step == "smtp_login"
    assert connection.problem_detail == TENANT_REFUSAL
    assert connection.problem_first_seen is not None
    assert connection.health == "ok" and connection.intent == "active"  # mail still syncs
    assert queued == [connection.pk]

    # The first sync reads the mailbox fine and does not forget the sending problem.
    mailbox_sync(connection)
    connection.refresh_from_db()
    assert (connection.health, connection.problem_code) == ("ok", "send.smtp_auth_disabled")
    assert connection.last_success_at is not None

    my_account = _page(owner_client.get(reverse("accounts:my_account")))
    assert "switched off sending from this mailbox" in my_account
    problems = _page(owner_client.get(PROBLEMS))
    assert GUIDE_TITLE in problems and connection.email_address in problems
    assert "SmtpClientAuthentication is disabled for the Tenant." in problems


def test_a_good_smtp_login_passes_every_step_and_records_no_problem(
    owner_client, mailbox_user, smtp, queued
):
    page = _page(owner_client.post(CONNECT, _form(mailbox_user, smtp)))
    assert "The test passed" in page
    assert "✓ Log in to send (SMTP)" in page and "✗" not in page

    response = owner_client.post(CONNECT, _form(mailbox_user, smtp, action="save"))

    assert response.status_code == 302
    connection = MailboxConnection.objects.get()
    assert (connection.health, connection.problem_code, connection.problem_step) == ("ok", "", "")
    assert GUIDE_TITLE not in _page(owner_client.get(PROBLEMS))


def test_a_wrong_smtp_password_is_shown_and_blocks_saving_unless_sending_is_skipped(
    owner_client, mailbox_user, smtp, queued
):
    smtp.users[mailbox_user.name] = "the-smtp-password-is-different"

    response = owner_client.post(CONNECT, _form(mailbox_user, smtp, action="save"))

    page = _page(response)
    assert response.status_code == 200
    assert "✗ Log in to send (SMTP)" in page and "5.7.8 Authentication credentials invalid" in page
    assert "sync.auth_failed" in page and "send.smtp_auth_disabled" not in page
    assert "Save without sending" in page
    assert not MailboxConnection.objects.exists()

    response = owner_client.post(CONNECT, _form(mailbox_user, smtp, action="save", skip_smtp="on"))

    assert response.status_code == 302
    connection = MailboxConnection.objects.get()
    assert (connection.health, connection.problem_code) == ("ok", "")
    assert GUIDE_TITLE not in _page(owner_client.get(PROBLEMS))


def test_a_mailbox_that_cannot_be_read_is_not_saved_even_if_smtp_is_refused(
    owner_client, mailbox_user, smtp
):
    smtp.smtp_auth_disabled.add(mailbox_user.name)

    response = owner_client.post(
        CONNECT, _form(mailbox_user, smtp, action="save", password="wrong-password")
    )

    page = _page(response)
    assert "The test failed, so the mailbox was not saved" in page
    assert "✗ Log in" in page and "Log in to send" not in page  # stopped before SMTP
    assert not MailboxConnection.objects.exists()


def _saved_with_refused_smtp(owner_client, mailbox_user, smtp) -> MailboxConnection:
    smtp.smtp_auth_disabled.add(mailbox_user.name)
    owner_client.post(CONNECT, _form(mailbox_user, smtp, action="save"))
    connection = MailboxConnection.objects.get()
    assert connection.problem_code == SMTP_AUTH_DISABLED
    return connection


def _reauth(owner_client, connection, smtp, mailbox_user, **extra):
    data = {
        "password": mailbox_user.password,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "action": "save",
    }
    data.update(extra)
    return owner_client.post(f"{CONNECT}?connection={connection.pk}", data)


def test_a_later_successful_smtp_test_clears_the_problem(owner_client, mailbox_user, smtp, queued):
    connection = _saved_with_refused_smtp(owner_client, mailbox_user, smtp)
    smtp.smtp_auth_disabled.discard(mailbox_user.name)  # the admin switched SMTP AUTH on

    page = _page(_reauth(owner_client, connection, smtp, mailbox_user, action="test"))

    assert "The test passed" in page
    connection.refresh_from_db()
    assert (connection.health, connection.problem_code, connection.problem_detail) == ("ok", "", "")
    assert GUIDE_TITLE not in _page(owner_client.get(PROBLEMS))


def test_reauthenticate_keeps_the_sending_problem_until_smtp_is_checked(
    owner_client, mailbox_user, smtp, queued
):
    connection = _saved_with_refused_smtp(owner_client, mailbox_user, smtp)

    response = _reauth(owner_client, connection, smtp, mailbox_user, skip_smtp="on")
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.problem_code == SMTP_AUTH_DISABLED  # not checked, so not cleared

    response = _reauth(owner_client, connection, smtp, mailbox_user)  # still refused
    assert response.status_code == 302
    connection.refresh_from_db()
    assert (connection.problem_code, connection.health) == (SMTP_AUTH_DISABLED, "ok")

    smtp.smtp_auth_disabled.discard(mailbox_user.name)
    assert _reauth(owner_client, connection, smtp, mailbox_user).status_code == 302
    connection.refresh_from_db()
    assert (connection.problem_code, connection.problem_step) == ("", "")


def test_a_sync_failure_replaces_the_sending_problem(owner_client, mailbox_user, smtp, queued):
    connection = _saved_with_refused_smtp(owner_client, mailbox_user, smtp)
    mailbox_user.server.set_password(mailbox_user.name, "changed-by-the-mail-admin")

    mailbox_sync(connection)

    connection.refresh_from_db()
    # Reading broke: that is more urgent than sending and needs the member now.
    assert (connection.health, connection.problem_code) == ("needs_reauth", "sync.auth_failed")


def test_another_smtp_failure_shows_its_step_and_blocks_saving(owner_client, mailbox_user, smtp):
    # This SMTP server offers no STARTTLS: a settings problem at the TLS step, not a ban.
    data = _form(mailbox_user, smtp, action="save", smtp_security="starttls")

    page = _page(owner_client.post(CONNECT, data))

    assert "✓ Connect to the sending server (SMTP)" in page
    assert 'data-step="smtp_tls">✗ Secure the sending connection (TLS)' in page
    assert "does not offer STARTTLS" in page and "sync.protocol_unsupported" in page
    assert "Save without sending" in page
    assert not MailboxConnection.objects.exists()
