"""Factories and fixtures for mailsync tests.

Import the fixtures into a test module (``from tests.mailsync.factories import fernet_key``)
so that credentials can be encrypted: the test settings run with DEBUG off and no key, as
production would before an operator sets MAILSYNC_FERNET_KEYS.
"""

from __future__ import annotations

import factory
import pytest
from cryptography.fernet import Fernet

from mailsync import crypto, services
from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageClientLink
from tests.factories import FirmFactory, UserFactory

TEST_KEY = Fernet.generate_key().decode()


@pytest.fixture(autouse=True)
def fernet_key(settings) -> str:
    settings.MAILSYNC_FERNET_KEYS = [TEST_KEY]
    return TEST_KEY


class MailboxConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MailboxConnection

    firm = factory.SubFactory(FirmFactory)
    owner = factory.SubFactory(UserFactory)
    kind = MailboxConnection.Kind.IMAP
    email_address = factory.Sequence(lambda n: f"member{n}@firm.test")
    host = "127.0.0.1"
    port = 143
    security = "none"
    username = factory.LazyAttribute(lambda o: o.email_address)
    secret = factory.LazyFunction(lambda: crypto.encrypt("pw"))


class MailboxFolderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MailboxFolder

    connection = factory.SubFactory(MailboxConnectionFactory)
    name = "INBOX"
    enabled = True


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    firm = factory.SubFactory(FirmFactory)
    key = factory.Sequence(lambda n: f"{n:064d}")
    message_id = factory.Sequence(lambda n: f"{n}@mail.test")
    subject = factory.Sequence(lambda n: f"Subject {n}")
    from_address = "client@client.test"
    thread_key = factory.LazyAttribute(lambda o: o.key)
    snippet = "Hello"
    text_body = "Hello"
    raw = b"Subject: x\r\n\r\nHello\r\n"


def connect_mailbox(firm, user, *, kind: str = "imap", owner=None) -> MailboxConnection:
    """A mailbox saved as a member would save it, for a loopback test server's user (a
    Dovecot or Courier ``MailboxUser``: ``name``, ``password`` and ``server``)."""
    server = user.server
    return services.connection_create(
        firm=firm,
        owner=owner or UserFactory(),
        kind=kind,
        email_address=f"{user.name}@firm.test",
        host=server.host,
        port=server.imap_port if kind == "imap" else server.pop3_port,
        security="none",
        username=user.name,
        password=user.password,
    )


class MessageClientLinkFactory(factory.django.DjangoModelFactory):
    """A client link as mailsync.linking writes one: the message's date on the link and
    the message flagged as linked."""

    class Meta:
        model = MessageClientLink
        skip_postgeneration_save = True

    message = factory.SubFactory(MessageFactory)
    message_date = factory.LazyAttribute(lambda o: o.message.date)

    @factory.post_generation
    def flag_message(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create and not self.message.linked:
            Message.objects.filter(pk=self.message_id).update(linked=True)
            self.message.linked = True
