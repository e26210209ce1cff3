"""The demo's sending server: the SMTP server the demo members' mailboxes send through.

In the embedded run (scripts/run.sh) a member who writes to a client on the Email tab goes
through the real path (kept, queued, sent by the worker over SMTP with the mailbox's login,
stored on the client) and the email lands in the local Outbox instead of anyone's inbox.
It listens on loopback only and takes any login; it is for
the demo, never for production (`manage.py demo_smtp` refuses to start with DEBUG off).
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.db import connection

from mailsync.models import MailboxConnection
from portal.mail_outbox import outbox_keep

HOST = "127.0.0.1"


def _keep(*, login: str, mail_from: str, recipients: list[str], raw: bytes) -> None:
    """Keep the email in the Outbox, tied to the firm of the mailbox that logged in."""
    try:
        outbox_keep(
            firm_id=MailboxConnection.objects.filter(username=login)
            .values_list("firm_id", flat=True)
            .first(),
            subject=str(message_from_bytes(raw, policy=policy.default).get("Subject", "")),
            from_email=mail_from,
            recipients=recipients,
            raw=raw,
        )
    finally:
        connection.close()  # this thread of asyncio's pool may not run again for long


class _KeepInOutbox:
    async def handle_DATA(self, server, session, envelope) -> str:
        login = session.auth_data.login.decode() if session.auth_data else ""
        # The ORM is synchronous: store from a thread, not from the event loop.
        await asyncio.to_thread(
            _keep,
            login=login,
            mail_from=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            raw=envelope.original_content or envelope.content,
        )
        return "250 Kept in the demo's Outbox"


def _any_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    # Called on the event loop, where the ORM may not run: any login is taken, and the
    # mailbox it names decides the firm when the mail is kept.
    ok = isinstance(auth_data, LoginPassword)
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


def demo_smtp_server(port: int) -> Controller:
    """The server, not started yet (``.start()``, ``.stop()``)."""
    return Controller(
        _KeepInOutbox(),
        hostname=HOST,
        port=port,
        authenticator=_any_login,
        auth_require_tls=False,  # loopback only
    )
