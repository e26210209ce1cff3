"""Writing to a client as a member's browser does it: press Send on the compose form, a
worker on the send queue sends the email, and the page Send led to shows the outcome."""

from __future__ import annotations

import secrets

from django.test import Client as HttpClient
from django.urls import reverse

from mailsync import crypto
from mailsync.models import MailboxConnection, OutgoingServer, WrittenEmail
from mailsync.tasks import send_written_email
from tests.mailsync.factories import MailboxConnectionFactory
from tests.servers.smtp_auth import SubmissionServer


def sending_mailbox(
    submission: SubmissionServer, *, firm, owner, address: str, password: str = "", **extra
) -> MailboxConnection:
    login = extra.pop("username", address.split("@")[0])
    password = password or f"pw-{login}"
    submission.add_user(login, password, sends_as=(address,))
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner,
        email_address=address,
        username=login,
        secret=crypto.encrypt(password),
        **extra,
    )
    OutgoingServer.objects.create(
        connection=connection, host=submission.host, port=submission.port, security="none"
    )
    return connection


def run_send_worker() -> int:
    """Run the send task of every written email still queued, as a worker would; how many."""
    queued = list(
        WrittenEmail.objects.filter(status=WrittenEmail.Status.QUEUED).values_list("pk", flat=True)
    )
    for pk in queued:
        send_written_email(pk)
    return len(queued)


def press_send(http: HttpClient, url: str, data: dict):
    """POST the form as rendered (with a submission key of its own); when the page queued
    the email, let the worker send it and return the page Send leads to (a redirect to the
    Email tab once sent, the compose page again when it was not)."""
    response = http.post(url, {"submission": secrets.token_urlsafe(8), **data})
    if response.status_code != 302 or "/email/written/" not in response["Location"]:
        return response  # the form refused it: nothing was queued
    run_send_worker()
    return http.get(response["Location"])


def compose_url(client) -> str:
    return reverse("mailsync:compose", args=[client.pk])
