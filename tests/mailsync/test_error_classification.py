"""classify(): real exceptions and real servers' replies to stable problem codes."""

from __future__ import annotations

import errno
import imaplib
import pickle
import poplib
import smtplib
import socket
import ssl

import pytest

from mailsync.errors import (
    FolderNotFound,
    MissingCapability,
    OAuthLoginRefused,
    SyncError,
    UnexpectedGreeting,
    classify,
)

AUTH = ("sync.auth_failed", False)
TWO_FACTOR = ("sync.two_factor", False)
SETTINGS = ("sync.server_settings", False)
UNSUPPORTED = ("sync.protocol_unsupported", False)
CONNECTION = ("sync.connection", True)
SCOPE = ("sync.insufficient_scope", False)

IMAP = imaplib.IMAP4

# (id, exception, step, (code, transient))
CASES = [
    # --- IMAP login replies ---
    (
        "dovecot-auth-failed",
        IMAP.error(b"[AUTHENTICATIONFAILED] Authentication failed."),
        "login",
        AUTH,
    ),
    (
        "gmail-invalid-credentials",
        IMAP.error(b"[AUTHENTICATIONFAILED] Invalid credentials (Failure)"),
        "login",
        AUTH,
    ),
    ("exchange-login-failed", IMAP.error(b"LOGIN failed."), "login", AUTH),
    ("outlook-authenticate-failed", IMAP.error("AUTHENTICATE failed."), "login", AUTH),
    (
        "xoauth2-token-refused",
        IMAP.error(
            "[AUTHENTICATIONFAILED] Authentication failed. "
            '{"status":"401","schemes":"bearer","scope":"mail"}'
        ),
        "login",
        AUTH,
    ),
    ("unknown-login-refusal", IMAP.error(b"NO go away"), "login", AUTH),
    # --- the protocol switched off for the mailbox (not a wrong password) ---
    (
        "gmail-imap-not-enabled",
        IMAP.error(
            b"[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail "
            b"settings page and enable your account for IMAP access. (Failure)"
        ),
        "login",
        UNSUPPORTED,
    ),
    (
        "gmail-workspace-imap-disabled",
        IMAP.error(b"[ALERT] IMAP access is disabled for your domain. (Failure)"),
        "login",
        UNSUPPORTED,
    ),
    (
        "microsoft-imap-off-after-login",
        IMAP.error(b"User is authenticated but not connected."),
        "select",
        UNSUPPORTED,
    ),
    (
        "microsoft-valid-token-imap-off",
        OAuthLoginRefused("AUTHENTICATE failed.", token_refused=False),
        "login",
        UNSUPPORTED,
    ),
    (
        "microsoft-refused-token",
        OAuthLoginRefused(
            'AUTHENTICATE failed. {"status":"401","schemes":"bearer"}', token_refused=True
        ),
        "login",
        AUTH,
    ),
    # --- two-factor / app passwords ---
    (
        "gmail-app-password",
        IMAP.error(
            b"[ALERT] Application-specific password required: "
            b"https://support.google.com/accounts/answer/185833 (Failure)"
        ),
        "login",
        TWO_FACTOR,
    ),
    (
        "gmail-web-login",
        IMAP.error(
            b"[ALERT] Please log in via your web browser: "
            b"https://support.google.com/mail/accounts/answer/78754 (Failure)"
        ),
        "login",
        TWO_FACTOR,
    ),
    (
        "microsoft-mfa",
        IMAP.error(
            "AADSTS50076: Due to a configuration change made by your administrator, or "
            "because you moved to a new location, you must use multi-factor authentication"
        ),
        "login",
        TWO_FACTOR,
    ),
    (
        "alert-app-password",
        IMAP.error(b"[ALERT] Your account requires an app password to sign in"),
        "login",
        TWO_FACTOR,
    ),
    (
        "gmail-smtp-app-password",
        smtplib.SMTPAuthenticationError(
            534,
            b"5.7.9 Application-specific password required. "
            b"https://support.google.com/mail/?p=InvalidSecondFactor",
        ),
        "smtp_login",
        TWO_FACTOR,
    ),
    # --- OAuth scope ---
    (
        "microsoft-consent-missing",
        IMAP.error("AADSTS65001: The user or administrator has not consented to use the app"),
        "login",
        SCOPE,
    ),
    ("insufficient-scope", IMAP.error("AUTHENTICATE failed: insufficient_scope"), "login", SCOPE),
    # --- wrong security / settings ---
    (
        "plaintext-disallowed",
        IMAP.error(
            b"[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
            b"(SSL/TLS) connections."
        ),
        "login",
        SETTINGS,
    ),
    (
        "tls-to-plain-port",
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
        "tls",
        SETTINGS,
    ),
    (
        "certificate-not-trusted",
        ssl.SSLCertVerificationError(
            1,
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: self-signed certificate (_ssl.c:1006)",
        ),
        "tls",
        SETTINGS,
    ),
    (
        "pop3-greeting-on-imap-port",
        UnexpectedGreeting("IMAP", "+OK Dovecot (Debian) ready."),
        "connect",
        SETTINGS,
    ),
    (
        "imap-greeting-on-pop3-port",
        poplib.error_proto(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot (Debian) ready."),
        "connect",
        SETTINGS,
    ),
    (
        "imap-greeting-on-smtp-port",
        smtplib.SMTPConnectError(-1, b"OK [CAPABILITY IMAP4rev1] Dovecot ready."),
        "smtp_connect",
        SETTINGS,
    ),
    (
        "garbage-before-login",
        IMAP.abort("unexpected response: b'HTTP/1.1 400 Bad Request'"),
        "connect",
        SETTINGS,
    ),
    (
        "host-does-not-resolve",
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        "connect",
        ("sync.server_settings", True),
    ),
    (
        "ca-file-missing",
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        "connect",
        SETTINGS,
    ),
    (
        "smtp-auth-disabled-for-tenant",
        smtplib.SMTPAuthenticationError(
            535,
            b"5.7.139 Authentication unsuccessful, "
            b"SmtpClientAuthentication is disabled for the Tenant.",
        ),
        "smtp_login",
        ("send.smtp_auth_disabled", False),
    ),
    # --- missing capabilities ---
    ("no-xoauth2", MissingCapability("AUTH=XOAUTH2"), "login", UNSUPPORTED),
    ("no-uidl", MissingCapability("UIDL"), "login", UNSUPPORTED),
    ("imaplib-no-starttls", IMAP.abort("TLS not supported by server"), "tls", UNSUPPORTED),
    (
        "smtp-no-auth",
        smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."),
        "smtp_login",
        UNSUPPORTED,
    ),
    # --- POP3 replies ---
    ("pop3-auth-failed", poplib.error_proto(b"-ERR [AUTH] Authentication failed."), "login", AUTH),
    (
        "pop3-sys-temp",
        poplib.error_proto(b"-ERR [SYS/TEMP] Temporary authentication failure"),
        "login",
        CONNECTION,
    ),
    (
        "pop3-in-use",
        poplib.error_proto(b"-ERR [IN-USE] Mailbox is locked by another POP3 session"),
        "login",
        CONNECTION,
    ),
    # --- network: retry with backoff ---
    (
        "imap-unavailable",
        IMAP.error(b"[UNAVAILABLE] Temporary authentication failure. [mail:2025-03-03 10:00:00]"),
        "login",
        CONNECTION,
    ),
    ("timeout", TimeoutError("timed out"), "connect", CONNECTION),
    (
        "refused",
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        "connect",
        CONNECTION,
    ),
    ("unreachable", OSError(errno.ENETUNREACH, "Network is unreachable"), "connect", CONNECTION),
    (
        "reset-mid-fetch",
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        "fetch",
        CONNECTION,
    ),
    (
        "tls-handshake-eof",
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        "tls",
        CONNECTION,
    ),
    ("imap-dropped-mid-fetch", IMAP.abort("socket error: EOF"), "fetch", CONNECTION),
    (
        "smtp-disconnected",
        smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
        "smtp_login",
        CONNECTION,
    ),
    (
        "smtp-try-later",
        smtplib.SMTPResponseException(421, b"4.7.0 Try again later"),
        "smtp_login",
        CONNECTION,
    ),
    (
        "smtp-auth-rejected",
        smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"),
        "smtp_login",
        AUTH,
    ),
]


@pytest.mark.parametrize(
    ("exc", "step", "expected"),
    [pytest.param(exc, step, expected, id=case_id) for case_id, exc, step, expected in CASES],
)
def test_it_classifies(exc, step, expected):
    error = classify(exc, step=step)

    assert (error.code, error.transient) == expected
    assert error.step == step


def test_it_keeps_the_server_reply_as_clean_text():
    error = classify(IMAP.error(b"[AUTHENTICATIONFAILED] Authentication failed."), step="login")

    assert error.detail == "[AUTHENTICATIONFAILED] Authentication failed."


def test_it_never_puts_secrets_in_the_detail():
    password = "hunter2-Secret!"
    exc = IMAP.error(f"LOGIN alice {password} failed; auth=Bearer ya29.tokenvalue")

    error = classify(exc, step="login", secrets=[password])

    assert password not in error.detail and password not in str(error)
    assert "ya29.tokenvalue" not in error.detail


def test_it_passes_a_sync_error_through_unchanged():
    original = SyncError("sync.connection", transient=True, detail="x", step="fetch")

    assert classify(original, step="login") is original


def test_it_survives_pickling_for_celery():
    error = classify(IMAP.error(b"LOGIN failed."), step="login")
    missing = FolderNotFound("Archive", detail="Mailbox doesn't exist", step="status")

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    missing_copy = pickle.loads(pickle.dumps(missing))  # noqa: S301

    assert (copy.code, copy.transient, copy.detail, copy.step) == (
        error.code,
        error.transient,
        error.detail,
        error.step,
    )
    assert (missing_copy.folder, missing_copy.code) == ("Archive", "sync.server_settings")


def test_it_refuses_codes_outside_the_catalogue():
    with pytest.raises(ValueError):
        SyncError("sync.whatever", transient=False)
