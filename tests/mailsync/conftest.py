"""Mailbox adapter tests run against a real Dovecot on loopback (no mocked servers)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from mailsync.adapters import Credentials, ServerSettings
from mailsync.netguard import Guard
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.servers import dovecot_fixtures, s3
from tests.servers.dovecot_fixtures import MailboxUser

# The test servers listen on loopback, which the portal refuses unless allowed explicitly.
LOOPBACK = Guard(allow_private=True)

# The session's Dovecot and a fresh user per test (see tests/servers/dovecot_fixtures.py).
dovecot = dovecot_fixtures.dovecot
mailbox_user = dovecot_fixtures.mailbox_user
# S3-compatible buckets for the raw mail and the documents (see tests/servers/s3.py).
s3_server = s3.s3_server
s3_blob_store = s3.s3_blob_store
s3_document_store = s3.s3_document_store

_message_ids = itertools.count(1)


def _message(subject: str = "Hello", body: str = "Hi there.", *, size: int = 0) -> bytes:
    """An RFC 5322 message with CRLF line ends (IMAP stores and returns CRLF), padded with
    76-character body lines to about ``size`` bytes if asked."""
    lines = [
        "From: Client <client@example.test>",
        "To: Accountant <me@firm.test>",
        f"Subject: {subject}",
        f"Message-ID: <{next(_message_ids)}.test@example.test>",
        "Date: Mon, 03 Mar 2025 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        body,
    ]
    raw = "\r\n".join(lines).encode() + b"\r\n"
    if size > len(raw):
        line = b"0123456789abcdef" * 4 + b"0123456789ab\r\n"
        raw += line * -(-(size - len(raw)) // len(line))
    return raw


@pytest.fixture
def make_message() -> Callable[..., bytes]:
    return _message


@pytest.fixture
def imap_settings(mailbox_user: MailboxUser) -> ServerSettings:
    """Plain IMAP (no TLS) for the test's user, with a short timeout."""
    server = mailbox_user.server
    return ServerSettings(
        server.host, server.imap_port, "none", mailbox_user.name, timeout=5, guard=LOOPBACK
    )


@pytest.fixture
def pop3_settings(mailbox_user: MailboxUser) -> ServerSettings:
    server = mailbox_user.server
    return ServerSettings(
        server.host, server.pop3_port, "none", mailbox_user.name, timeout=5, guard=LOOPBACK
    )


@pytest.fixture
def credentials(mailbox_user: MailboxUser) -> Credentials:
    return Credentials(password=mailbox_user.password)


# A client with two addresses, for writing to from the Email tab.
@pytest.fixture
def client_(firm):
    client = ClientFactory(firm=firm, display_name="Birch Bakery")
    contact = ContactFactory(client=client, name="Bea Birch")
    ContactAddressFactory(contact=contact, address="bea@bakery.test", is_primary=True)
    ContactAddressFactory(contact=contact, address="orders@bakery.test", is_primary=False)
    return client
