"""A member hears at once when their mailbox needs re-authentication, then at most daily."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.core import mail
from django.db import connection as db_connection
from django.utils import translation

from mailsync import services
from mailsync.engine import mailbox_sync
from mailsync.models import MailboxConnection
from mailsync.tasks import remind_reauth
from tests.db_locks import only_on_postgresql
from tests.factories import UserFactory
from tests.mailsync.factories import (  # noqa: F401
    MailboxConnectionFactory,
    connect_mailbox,
    fernet_key,
)

postgresql_only = only_on_postgresql("row locking needs PostgreSQL")


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "http://testserver"


def _mailbox(firm, user, owner):
    return connect_mailbox(firm, user, owner=owner)


def _age_notice(connection, hours):
    MailboxConnection.objects.filter(pk=connection.pk).update(
        reauth_notified_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours)
    )


def test_a_refused_login_emails_the_member_at_once_in_their_language(firm, mailbox_user):
    member = UserFactory(language="fi")
    connection = _mailbox(firm, mailbox_user, member)
    mailbox_user.server.set_password(mailbox_user.name, "changed-on-the-server")

    mailbox_sync(connection)
    remind_reauth()  # the hourly reminder run right after adds nothing

    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == [member.email]
    assert connection.email_address in email.subject
    with translation.override("fi"):
        finnish = translation.gettext("We remind you at most once a day until it is fixed.")
    assert finnish != "We remind you at most once a day until it is fixed."
    assert finnish in email.body
    assert f"/settings/email-sync/connect/?connection={connection.pk}" in email.body


def test_while_it_lasts_a_reminder_goes_at_most_once_a_day(firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user, UserFactory())
    mailbox_user.server.set_password(mailbox_user.name, "changed-on-the-server")
    mailbox_sync(connection)

    _age_notice(connection, hours=23)
    remind_reauth()
    assert len(mail.outbox) == 1

    _age_notice(connection, hours=25)
    remind_reauth()
    remind_reauth()
    assert len(mail.outbox) == 2


def test_once_fixed_no_more_reminders_and_a_new_failure_is_told_at_once(firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user, UserFactory())
    server = mailbox_user.server
    server.set_password(mailbox_user.name, "changed-on-the-server")
    mailbox_sync(connection)
    services.connection_reauthenticate(connection=connection, password="changed-on-the-server")
    connection.refresh_from_db()
    assert connection.reauth_notified_at is None

    _age_notice(connection, hours=0)  # even an old notice would not remind a healthy mailbox
    MailboxConnection.objects.filter(pk=connection.pk).update(reauth_notified_at=None)
    remind_reauth()
    assert len(mail.outbox) == 1

    server.set_password(mailbox_user.name, "changed-again")
    mailbox_sync(connection)
    assert len(mail.outbox) == 2


def test_the_shared_mailbox_tells_the_firms_owners(firm, owner, staff):
    MailboxConnectionFactory(firm=firm, owner=None, health=MailboxConnection.Health.NEEDS_REAUTH)
    remind_reauth()
    assert [email.to for email in mail.outbox] == [[owner.user.email]]


def _notify_in_own_connection(pk: int, barrier: threading.Barrier, sent: list[bool]) -> None:
    try:
        barrier.wait()
        sent.append(services.connection_reauth_notify(pk=pk))
    finally:
        db_connection.close()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_workers_seeing_the_failure_together_send_one_email():
    for _round in range(5):
        connection = MailboxConnectionFactory(health=MailboxConnection.Health.NEEDS_REAUTH)
        mail.outbox = []
        sent: list[bool] = []
        barrier = threading.Barrier(6)
        workers = [
            threading.Thread(target=_notify_in_own_connection, args=(connection.pk, barrier, sent))
            for _ in range(6)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert sorted(sent) == [False] * 5 + [True]
        assert len(mail.outbox) == 1
