"""Test account explains a failure in plain words with the guide's link, not the server's
raw reply; a test that passed keeps the password typed for Save."""

from __future__ import annotations

import imaplib
import socket

from django.urls import reverse

from mailsync.check_words import plain_failure
from mailsync.errors import classify
from mailsync.models import MailboxConnection
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.mailsync.test_pages import CONNECT, _form


def test_a_wrong_password_is_explained_with_the_guide_link(owner_client, mailbox_user):
    response = owner_client.post(
        CONNECT, _form(mailbox_user, password="wrong-password", action="test")
    )
    page = response.content.decode()
    assert "The server refused the user name or password" in page
    assert f'href="{reverse("troubleshooting:guides")}#sync.auth_failed"' in page
    assert "wrong-password" not in page
    assert not MailboxConnection.objects.exists()


def test_a_passing_test_keeps_the_typed_password_for_save(owner_client, mailbox_user):
    response = owner_client.post(CONNECT, _form(mailbox_user, action="test"))
    page = response.content.decode()
    assert "The test passed" in page
    assert f'value="{mailbox_user.password}"' in page


def test_an_unknown_server_name_is_named_not_quoted_as_errno():
    error = classify(socket.gaierror(-2, "Name or service not known"), step="connect")
    plain = plain_failure(error, host="imap.exmaple.com")
    assert "The server name imap.exmaple.com does not exist" in plain.message
    assert "Errno" not in plain.message


def test_authenticationfailed_reads_as_a_refused_password():
    refusal = imaplib.IMAP4.error("[AUTHENTICATIONFAILED] Invalid credentials")
    error = classify(refusal, step="login")
    plain = plain_failure(error)
    assert plain.message.startswith("The server refused the user name or password")
    assert plain.guide_url.endswith("#sync.auth_failed")


def test_a_sending_failure_says_it_is_about_sending():
    error = classify(socket.gaierror(-2, "Name or service not known"), step="smtp_connect")
    assert plain_failure(error, host="smtp.x.test").message.startswith("Sending (SMTP):")
