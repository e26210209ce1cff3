"""The "Test settings" check run before a mailbox is saved (and on Re-authenticate).

Runs connect → tls → login → list folders (IMAP) or STAT (POP3) → SMTP connect/tls/login,
stopping at the first failure, and reports each step with the server's own reply so the
member (or their mail admin) sees exactly where it broke.

Pure Python: no Django imports.
"""

from __future__ import annotations

import smtplib
import socket
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

from mailsync.adapters.base import Credentials, ServerSettings
from mailsync.adapters.imap import ImapMailbox
from mailsync.adapters.pop3 import Pop3Mailbox
from mailsync.adapters.smtp import GuardedSMTP, GuardedSMTPSSL
from mailsync.errors import MissingCapability, SyncError, classify

__all__ = ["AccountCheck", "StepResult", "check_account"]

Protocol = Literal["imap", "pop3"]


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class AccountCheck:
    steps: list[StepResult] = field(default_factory=list)
    # The failing step's classified error (code, transient, server reply); None if all passed.
    error: SyncError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failed_step(self) -> str | None:
        return self.error.step if self.error is not None else None


class _Stop(Exception):
    def __init__(self, error: SyncError) -> None:
        self.error = error
        super().__init__(str(error))


def _tls_detail(sock: object) -> str:
    version = getattr(sock, "version", None)
    if callable(version):
        cipher = sock.cipher() if hasattr(sock, "cipher") else None  # type: ignore[attr-defined]
        name = cipher[0] if cipher else ""
        return f"{version()} {name}".strip()
    return ""


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[StepResult] = []

    def ok(self, name: str, detail: str = "") -> None:
        self.steps.append(StepResult(name, True, detail))

    def fail(self, error: SyncError, *, passed_before: tuple[str, ...] = ()) -> _Stop:
        # A failure inside a compound call (e.g. open() = connect + tls) means the earlier
        # parts of it passed.
        for name in passed_before:
            self.ok(name)
        self.steps.append(StepResult(error.step, False, error.detail))
        return _Stop(error)


def _mailbox_steps(
    record: _Recorder,
    protocol: Protocol,
    settings: ServerSettings,
    credentials: Credentials,
) -> None:
    box: ImapMailbox | Pop3Mailbox = (
        ImapMailbox(settings, credentials)
        if protocol == "imap"
        else Pop3Mailbox(settings, credentials)
    )
    try:
        try:
            box.open()
        except SyncError as err:
            raise record.fail(err, passed_before=("connect",) if err.step == "tls" else ()) from err
        endpoint = f"{settings.host}:{settings.port}"
        record.ok("connect", f"{protocol.upper()} server at {endpoint}")
        if settings.security == "none":
            record.ok("tls", "not used (security: none)")
        else:
            record.ok("tls", _tls_detail(box.client.sock))
        try:
            box.login()
        except SyncError as err:
            raise record.fail(err) from err
        record.ok("login", f"logged in as {settings.username}")
        try:
            if isinstance(box, ImapMailbox):
                folders = box.list_folders()
                record.ok("list_folders", f"{len(folders)} folders")
            else:
                count, size = box.stat()
                record.ok("stat", f"{count} messages, {size} bytes")
        except SyncError as err:
            raise record.fail(err) from err
    finally:
        box.close()


_SMTP_ORDER = ("smtp_connect", "smtp_tls", "smtp_login")


def _smtp_steps(record: _Recorder, settings: ServerSettings, credentials: Credentials) -> None:
    step = "smtp_connect"

    def progress(name: str) -> None:
        nonlocal step
        step = name

    details = {
        "smtp_connect": f"SMTP server at {settings.host}:{settings.port}",
        "smtp_tls": "not used (security: none)",
        "smtp_login": f"logged in as {settings.username}",
    }
    context = settings.ssl_context() if settings.security != "none" else None
    # Not smtplib's default getfqdn(): a reverse DNS lookup that can stall for seconds.
    local_name = socket.gethostname() or "localhost"
    smtp: smtplib.SMTP
    if settings.security == "ssl":
        assert context is not None
        smtp = GuardedSMTPSSL(
            settings, local_hostname=local_name, timeout=settings.timeout, context=context
        )
    else:
        smtp = GuardedSMTP(settings, local_hostname=local_name, timeout=settings.timeout)
    smtp.progress = progress  # type: ignore[method-assign]
    try:
        code, message = smtp.connect(settings.host, settings.port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, message)
        smtp.ehlo_or_helo_if_needed()
        if settings.security == "starttls":
            step = "smtp_tls"
            if not smtp.has_extn("starttls"):
                raise MissingCapability("STARTTLS", "the SMTP server does not offer STARTTLS")
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.security != "none":
            details["smtp_tls"] = _tls_detail(smtp.sock)
        step = "smtp_login"
        if credentials.access_token is not None:
            initial = credentials.xoauth2(settings.username).decode()
            # On refusal the server sends a JSON challenge; an empty reply ends the exchange.
            smtp.auth(
                "XOAUTH2",
                lambda challenge=None: initial if challenge is None else "",
                initial_response_ok=True,
            )
        else:
            assert credentials.password is not None
            smtp.login(settings.username, credentials.password)
    except (smtplib.SMTPException, OSError, EOFError, ValueError, MissingCapability) as exc:
        error = classify(exc, step=step, secrets=credentials.secrets)
        for name in _SMTP_ORDER[: _SMTP_ORDER.index(step)]:
            record.ok(name, details[name])
        raise record.fail(error) from exc
    finally:
        with suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()
    for name in _SMTP_ORDER:
        record.ok(name, details[name])


def check_account(
    settings: ServerSettings,
    credentials: Credentials,
    smtp_settings: ServerSettings | None = None,
    *,
    protocol: Protocol = "imap",
    smtp_credentials: Credentials | None = None,
) -> AccountCheck:
    """Try the mailbox (and the SMTP server, if given) step by step.

    ``smtp_credentials`` default to ``credentials`` (most providers use the same login).
    """
    if protocol not in ("imap", "pop3"):
        raise ValueError(f"protocol must be 'imap' or 'pop3', not {protocol!r}")
    record = _Recorder()
    try:
        _mailbox_steps(record, protocol, settings, credentials)
        if smtp_settings is not None:
            _smtp_steps(record, smtp_settings, smtp_credentials or credentials)
    except _Stop as stop:
        return AccountCheck(steps=record.steps, error=stop.error)
    return AccountCheck(steps=record.steps)
