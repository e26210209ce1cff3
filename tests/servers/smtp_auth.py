"""A real SMTP submission server on loopback (aiosmtpd) that behaves like a mailbox
provider's: AUTH is required (PLAIN/LOGIN with a password, XOAUTH2 with an access token),
each login may send only as its own addresses, and some logins get Microsoft 365's
"authenticated SMTP is switched off" refusal.

Import the fixtures into a test module::

    from tests.servers.smtp_auth import submission, submission_server  # noqa: F401

``submission_server`` runs once per session on a free port; ``submission`` forgets every
user, token and message for one test. tests/servers/smtp.py (the relay Django's backend
sends through) is a different server and is left as it is.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers.dovecot import free_port

__all__ = [
    "SMTP_AUTH_DISABLED_REPLY",
    "Submission",
    "SubmissionServer",
    "submission",
    "submission_server",
]

HOST = "127.0.0.1"
# What Microsoft 365 answers to AUTH when SMTP AUTH is off for the tenant.
SMTP_AUTH_DISABLED_REPLY = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
)


@dataclass
class Submission:
    """One message as the server received it, with the login that sent it."""

    login: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _State:
    passwords: dict[str, str] = field(default_factory=dict)
    # access token → login (XOAUTH2); tests register those the OAuth stand-in issues.
    tokens: dict[str, str] = field(default_factory=dict)
    # login → the addresses it may use in MAIL FROM (lower-case).
    senders: dict[str, set[str]] = field(default_factory=dict)
    smtp_auth_disabled: set[str] = field(default_factory=set)
    received: list[Submission] = field(default_factory=list)
    # Every MAIL FROM tried: (login, address, accepted).
    mail_from_tried: list[tuple[str, str, bool]] = field(default_factory=list)
    # Every password login tried (login names), right or wrong.
    logins_tried: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _login(session) -> str:
    data = getattr(session.auth_data, "login", None)
    return data.decode() if isinstance(data, bytes) else ""


class _Handler:
    def __init__(self, state: _State) -> None:
        self.state = state

    async def auth_XOAUTH2(self, server, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Gmail and Microsoft 365 run it (the initial response carries
        ``user=...^Aauth=Bearer <token>^A^A``; a refusal sends a JSON challenge first)."""
        if len(args) > 1:
            blob = base64.b64decode(args[1].encode())
        else:
            blob = await server.challenge_auth("")
        fields = dict(
            part.split("=", 1)
            for part in blob.decode(errors="replace").split("\x01")
            if "=" in part
        )
        token = fields.get("auth", "").removeprefix("Bearer ").strip()
        user = fields.get("user", "")
        with self.state.lock:
            valid = self.state.tokens.get(token) == user and bool(user)
            disabled = user in self.state.smtp_auth_disabled
        if valid and not disabled:
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        if valid and disabled:
            return AuthResult(success=False, handled=False, message=SMTP_AUTH_DISABLED_REPLY)
        error = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        await server.challenge_auth(json.dumps(error))
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted (invalid token)",
        )

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Checked here, not with Controller(auth_required=True): aiosmtpd warns about AUTH
        # without TLS on every connection then, and the suite turns warnings into errors.
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        login = _login(session)
        with self.state.lock:
            allowed = address.lower() in self.state.senders.get(login, set())
            self.state.mail_from_tried.append((login, address, allowed))
        if not allowed:
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {login}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("unknown@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.state.lock:
            self.state.received.append(
                Submission(
                    _login(session),
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content),
                )
            )
        return "250 2.0.0 Ok: queued"


class SubmissionServer:
    """The server on a free loopback port; plain connection (security "none")."""

    def __init__(self) -> None:
        self.state = _State()
        self.host = HOST
        self.port = free_port()
        state = self.state

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            if not isinstance(auth_data, LoginPassword):
                return AuthResult(success=False, handled=False)
            login = auth_data.login.decode()
            with state.lock:
                state.logins_tried.append(login)
                right = state.passwords.get(login) == auth_data.password.decode()
                disabled = login in state.smtp_auth_disabled
            if not right:
                return AuthResult(success=False, handled=False)  # 535 5.7.8 ...
            if disabled:
                return AuthResult(success=False, handled=False, message=SMTP_AUTH_DISABLED_REPLY)
            return AuthResult(success=True, auth_data=auth_data)

        self.controller = Controller(
            _Handler(state),
            hostname=HOST,
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
        )

    # --- what tests set up and read --------------------------------------------------------

    def add_user(self, login: str, password: str, *, sends_as: tuple[str, ...] = ()) -> None:
        """A login that may send as ``sends_as`` (its mailbox address and any aliases)."""
        with self.state.lock:
            self.state.passwords[login] = password
            self.state.senders[login] = {address.lower() for address in sends_as}

    def allow_sender(self, login: str, address: str) -> None:
        with self.state.lock:
            self.state.senders.setdefault(login, set()).add(address.lower())

    def add_token(self, login: str, token: str) -> None:
        """Accept ``token`` for ``login`` over XOAUTH2 (wire to the OAuth stand-in's on_issue)."""
        with self.state.lock:
            self.state.tokens[token] = login

    def disable_smtp_auth(self, login: str) -> None:
        """Answer this login's AUTH as Microsoft 365 does with SMTP AUTH switched off."""
        with self.state.lock:
            self.state.smtp_auth_disabled.add(login)

    @property
    def received(self) -> list[Submission]:
        with self.state.lock:
            return list(self.state.received)

    @property
    def mail_from_tried(self) -> list[tuple[str, str, bool]]:
        with self.state.lock:
            return list(self.state.mail_from_tried)

    def reset(self) -> None:
        with self.state.lock:
            self.state.passwords.clear()
            self.state.tokens.clear()
            self.state.senders.clear()
            self.state.smtp_auth_disabled.clear()
            self.state.received.clear()
            self.state.mail_from_tried.clear()
            self.state.logins_tried.clear()

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="session")
def submission_server() -> Iterator[SubmissionServer]:
    server = SubmissionServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def submission(submission_server: SubmissionServer) -> Iterator[SubmissionServer]:
    submission_server.reset()
    yield submission_server
    submission_server.reset()
