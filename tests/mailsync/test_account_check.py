"""check_account() against real servers: Dovecot for IMAP/POP3, aiosmtpd for SMTP."""

from __future__ import annotations

import dataclasses
import ssl
import warnings
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailsync.account_check import check_account
from mailsync.adapters import Credentials, ServerSettings
from tests.mailsync.conftest import LOOPBACK
from tests.servers.dovecot import free_port


class _SmtpServer:
    """aiosmtpd with AUTH PLAIN/LOGIN accepting ``users``, over a plain connection or after
    STARTTLS (with the Dovecot fixture's self-signed certificate)."""

    def __init__(self, tls_context: ssl.SSLContext, *, implicit_tls: bool = False) -> None:
        self.users: dict[str, str] = {}
        self.port = free_port()

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            if not isinstance(auth_data, LoginPassword):
                return AuthResult(success=False, handled=False)
            login = auth_data.login.decode()
            ok = self.users.get(login) == auth_data.password.decode()
            return AuthResult(success=ok, handled=False)

        self.controller = Controller(
            object(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
            **({"ssl_context": tls_context} if implicit_tls else {"tls_context": tls_context}),
        )


def _running_smtp(dovecot, *, implicit_tls: bool) -> Iterator[_SmtpServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(dovecot.ca_file, dovecot.key_file)
    server = _SmtpServer(context, implicit_tls=implicit_tls)
    with warnings.catch_warnings():
        # aiosmtpd rightly warns about AUTH without TLS; on loopback in a test it is the point.
        warnings.simplefilter("ignore", UserWarning)
        server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture(scope="module")
def smtp_server(dovecot) -> Iterator[_SmtpServer]:
    """SMTP with optional STARTTLS (like port 587)."""
    yield from _running_smtp(dovecot, implicit_tls=False)


@pytest.fixture(scope="module")
def smtps_server(dovecot) -> Iterator[_SmtpServer]:
    """SMTP over implicit TLS (like port 465)."""
    yield from _running_smtp(dovecot, implicit_tls=True)


@pytest.fixture
def smtp_settings(smtp_server, mailbox_user) -> ServerSettings:
    smtp_server.users[mailbox_user.name] = mailbox_user.password
    return ServerSettings(
        "127.0.0.1", smtp_server.port, "none", mailbox_user.name, timeout=5, guard=LOOPBACK
    )


def _names(check) -> list[tuple[str, bool]]:
    return [(step.name, step.ok) for step in check.steps]


def test_it_passes_every_step_with_good_credentials(imap_settings, credentials, smtp_settings):
    check = check_account(imap_settings, credentials, smtp_settings)

    assert check.ok and check.error is None
    assert _names(check) == [
        ("connect", True),
        ("tls", True),
        ("login", True),
        ("list_folders", True),
        ("smtp_connect", True),
        ("smtp_tls", True),
        ("smtp_login", True),
    ]


def test_it_checks_a_pop3_mailbox_with_stat(pop3_settings, credentials):
    check = check_account(pop3_settings, credentials, protocol="pop3")

    assert check.ok
    assert _names(check)[-1] == ("stat", True)


def test_it_checks_over_implicit_tls(mailbox_user, imap_settings, credentials):
    server = mailbox_user.server
    settings = dataclasses.replace(
        imap_settings, port=server.imaps_port, security="ssl", ca_file=server.ca_file
    )

    check = check_account(settings, credentials)

    assert check.ok
    assert check.steps[1].name == "tls" and check.steps[1].detail.startswith("TLSv1")


def test_it_fails_at_login_with_the_servers_reply_for_a_wrong_password(imap_settings):
    check = check_account(imap_settings, Credentials(password="wrong-password"))

    assert not check.ok
    assert _names(check) == [("connect", True), ("tls", True), ("login", False)]
    assert check.error.code == "sync.auth_failed"
    assert check.error.step == "login"
    assert check.error.detail == "[AUTHENTICATIONFAILED] Authentication failed."
    assert check.steps[-1].detail == check.error.detail


def test_it_fails_at_login_after_the_password_changed_on_the_server(
    mailbox_user, imap_settings, credentials
):
    assert check_account(imap_settings, credentials).ok

    mailbox_user.server.set_password(mailbox_user.name, "changed-by-the-mail-admin")
    check = check_account(imap_settings, credentials)

    assert (check.error.code, check.error.step) == ("sync.auth_failed", "login")
    assert not check.error.transient


def test_it_fails_at_connect_when_nothing_listens(imap_settings, credentials):
    settings = dataclasses.replace(imap_settings, port=free_port())

    check = check_account(settings, credentials)

    assert _names(check) == [("connect", False)]
    assert check.error.code == "sync.connection"
    assert check.error.transient
    assert "refused" in check.error.detail.lower()


def test_it_calls_a_pop3_server_on_the_imap_port_a_settings_problem(
    mailbox_user, imap_settings, credentials
):
    settings = dataclasses.replace(imap_settings, port=mailbox_user.server.pop3_port)

    check = check_account(settings, credentials)

    assert (check.error.code, check.error.step) == ("sync.server_settings", "connect")
    # What answered is named in plain words; its own greeting (a banner) is never shown.
    assert "not as an IMAP server" in check.error.detail
    assert "+OK" not in check.error.detail


def test_it_calls_an_imap_server_on_the_pop3_port_a_settings_problem(
    mailbox_user, pop3_settings, credentials
):
    settings = dataclasses.replace(pop3_settings, port=mailbox_user.server.imap_port)

    check = check_account(settings, credentials, protocol="pop3")

    assert (check.error.code, check.error.step) == ("sync.server_settings", "connect")
    assert "not as a POP3 server" in check.error.detail or "did not answer" in check.error.detail
    assert "* OK" not in check.error.detail


def test_it_calls_tls_to_a_plain_port_a_settings_problem(imap_settings, credentials):
    settings = dataclasses.replace(imap_settings, security="ssl")

    check = check_account(settings, credentials)

    assert _names(check) == [("connect", True), ("tls", False)]
    assert check.error.code == "sync.server_settings"
    assert "wrong version number" in check.error.detail.lower()


def test_it_calls_plain_to_a_tls_port_a_settings_problem(mailbox_user, imap_settings, credentials):
    settings = dataclasses.replace(imap_settings, port=mailbox_user.server.imaps_port, timeout=0.5)

    check = check_account(settings, credentials)

    assert (check.error.code, check.error.step) == ("sync.server_settings", "connect")
    assert "TLS" in check.error.detail


def test_it_fails_at_smtp_login_with_a_wrong_smtp_password(
    imap_settings, credentials, smtp_settings
):
    check = check_account(
        imap_settings,
        credentials,
        smtp_settings,
        smtp_credentials=Credentials(password="not-the-smtp-password"),
    )

    assert _names(check)[-3:] == [("smtp_connect", True), ("smtp_tls", True), ("smtp_login", False)]
    assert check.error.code == "sync.auth_failed"
    assert check.error.detail.startswith("535")


def test_it_calls_an_imap_server_on_the_smtp_port_a_settings_problem(
    mailbox_user, imap_settings, credentials, smtp_settings
):
    smtp_at_imap = dataclasses.replace(smtp_settings, port=mailbox_user.server.imap_port)

    check = check_account(imap_settings, credentials, smtp_at_imap)

    assert (check.error.code, check.error.step) == ("sync.server_settings", "smtp_connect")


def test_it_checks_an_oauth_mailbox_with_xoauth2(mailbox_user, imap_settings):
    mailbox_user.server.add_oauth_token(mailbox_user.name, f"token-{mailbox_user.name}")

    check = check_account(imap_settings, Credentials(access_token=f"token-{mailbox_user.name}"))

    assert check.ok


def test_it_logs_in_to_smtp_after_starttls(mailbox_user, imap_settings, credentials, smtp_settings):
    smtp_tls = dataclasses.replace(
        smtp_settings, security="starttls", ca_file=mailbox_user.server.ca_file
    )

    check = check_account(imap_settings, credentials, smtp_tls)

    assert check.ok
    assert check.steps[-2].name == "smtp_tls" and check.steps[-2].detail.startswith("TLSv1")


def test_it_logs_in_to_smtp_over_implicit_tls(
    mailbox_user, imap_settings, credentials, smtps_server
):
    smtps_server.users[mailbox_user.name] = mailbox_user.password
    smtps = ServerSettings(
        "127.0.0.1",
        smtps_server.port,
        "ssl",
        mailbox_user.name,
        timeout=5,
        ca_file=mailbox_user.server.ca_file,
        guard=LOOPBACK,
    )

    check = check_account(imap_settings, credentials, smtps)

    assert check.ok
    assert [step.name for step in check.steps[-3:]] == ["smtp_connect", "smtp_tls", "smtp_login"]
