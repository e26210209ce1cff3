"""A web worker keeps a thread for pages while a member's mail server keeps another waiting:
"Test account", a sending server's test and a new sending address's test take the process's
one slot (MAIL_SERVER_WAITS_PER_PROCESS) and, when it is taken, answer at once that the
member should press again in a few seconds, with what they typed kept and nothing saved.

The server that does not answer is a real listener on loopback that accepts connections and
never says a word, as a firewalled or overloaded mail server does."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.urls import reverse

from mailsync.models import MailboxConnection, OutgoingAddress, OutgoingServer
from mailsync.server_waits import mail_server_wait
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.mailsync.writing import sending_mailbox
from tests.servers import smtp_auth
from tests.servers.silent import SilentServer

submission_server = smtp_auth.submission_server
submission = smtp_auth.submission

CONNECT = reverse("mailsync:credentials")
ADDRESSES = reverse("mailsync:sending_addresses")
BUSY = "Another check with a mail server is still running"


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def _test_account(port: int, username: str) -> dict:
    return {
        "kind": "imap",
        "email_address": f"{username}@alder.test",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": username,
        "password": "secret-password",
        "skip_smtp": "on",
        "action": "test",
    }


@pytest.mark.django_db(transaction=True)
def test_while_one_test_account_waits_on_a_silent_server_another_answers_at_once(
    owner, staff, silent_server
):
    waiting, other = HttpClient(), HttpClient()
    waiting.force_login(owner.user)
    other.force_login(staff.user)
    answered: list = []

    def press_test_account() -> None:
        try:
            answered.append(waiting.post(CONNECT, _test_account(silent_server.port, "ann")))
        finally:
            connection.close()  # this thread's own database connection

    first = threading.Thread(target=press_test_account)
    first.start()
    assert silent_server.connected.wait(timeout=10)

    busy = other.post(CONNECT, _test_account(silent_server.port, "bob"))

    page = busy.content.decode()
    assert busy.status_code == 503 and BUSY in page
    assert 'value="bob"' in page and "secret-password" not in page  # kept, never echoed
    assert not MailboxConnection.objects.exists()
    silent_server.close()  # the server hangs up: the first test ends
    first.join(timeout=30)
    assert "The test failed" in answered[0].content.decode()
    # The slot is free again: the next test runs.
    again = other.post(CONNECT, _test_account(silent_server.port, "bob")).content.decode()
    assert BUSY not in again and "The test failed" in again


def test_a_sending_servers_test_answers_at_once_while_the_slot_is_taken(
    owner_client, owner, firm, submission
):
    connection = sending_mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    OutgoingServer.objects.all().delete()
    form = {
        "connection": connection.pk,
        "action": "server",
        "host": submission.host,
        "port": submission.port,
        "security": "none",
        "password": "pw-ann",
    }

    with mail_server_wait():  # another request of this process is waiting on a server
        response = owner_client.post(ADDRESSES, form)

    assert response.status_code == 503 and BUSY in response.content.decode()
    assert not OutgoingServer.objects.exists()
    assert submission.received == [] and submission.mail_from_tried == []


def test_a_new_sending_address_answers_at_once_while_the_slot_is_taken(
    owner_client, owner, firm, submission
):
    connection = sending_mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    submission.allow_sender("ann", "billing@alder.test")
    form = {
        "connection": connection.pk,
        "action": "add",
        "address": "billing@alder.test",
        "display_name": "Alder Billing",
    }

    with mail_server_wait():
        busy = owner_client.post(ADDRESSES, form)
    added = owner_client.post(ADDRESSES, form)

    assert busy.status_code == 503 and BUSY in busy.content.decode()
    assert 'value="billing@alder.test"' in busy.content.decode()
    assert added.status_code == 302
    assert OutgoingAddress.objects.filter(normalized="billing@alder.test").exists()


def test_more_slots_let_more_requests_wait_at_once(settings):
    settings.MAIL_SERVER_WAITS_PER_PROCESS = 2

    with mail_server_wait(), mail_server_wait():
        pass  # both taken without refusal
