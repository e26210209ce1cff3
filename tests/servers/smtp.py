"""A real SMTP server on loopback (aiosmtpd) that refuses some recipients the way MTAs do.

Import the fixtures into a test module::

    from tests.servers.smtp import smtp_server, smtp  # noqa: F401

``smtp_server`` runs once per session on a free port; ``smtp`` empties its mailbag and points
Django's SMTP backend at it for one test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

__all__ = [
    "FULL",
    "POLICY",
    "REFUSALS",
    "UNKNOWN",
    "Received",
    "SMTPServer",
    "smtp",
    "smtp_server",
]

UNKNOWN = "unknown@client.test"
FULL = "full@client.test"
POLICY = "policy@client.test"
REFUSALS = {
    UNKNOWN: f"550 5.1.1 <{UNKNOWN}>: Recipient address rejected: User unknown",
    FULL: "452 4.2.2 Mailbox full",
    POLICY: "554 5.7.1 Rejected by policy",
}


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in REFUSALS:
            return REFUSALS[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SMTPServer:
    def __init__(self) -> None:
        self.handler = _Handler()
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.controller = Controller(self.handler, hostname=self.host, port=self.port)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def for_recipient(self, address: str) -> Received:
        found = [r for r in self.received if address in r.rcpt_tos]
        assert len(found) == 1, f"{len(found)} messages for {address}"
        return found[0]

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp(smtp_server: SMTPServer, settings) -> SMTPServer:
    smtp_server.received.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = smtp_server.host
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 10
    return smtp_server
