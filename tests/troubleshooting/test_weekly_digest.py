"""The weekly problems email, end to end through the SMTP server on loopback.

Monday from 08:00 in the firm's time zone, the hourly task emails each owner the firm's
open problems and each member those of their own mailboxes: what is new, what resolved
itself, what is still open, with links, in the recipient's language; nothing in a week with
nothing open; once per person per ISO week, however often or concurrently it runs.
"""

from __future__ import annotations

import datetime
import threading
from html import unescape

import pytest
from django.db import connection as db_connection
from django.urls import reverse
from django.utils import translation
from freezegun import freeze_time

from accounts.models import Role
from mailsync.models import MailboxConnection
from portal.models import Firm
from tests.factories import FirmFactory, MembershipFactory, UserFactory
from tests.invoicing import factories
from tests.mailsync.factories import (  # noqa: F401
    MailboxConnectionFactory,
    MailboxFolderFactory,
    fernet_key,
)
from tests.servers import smtp as smtp_fixtures
from troubleshooting.catalogue import guide_for
from troubleshooting.digest import firm_digests_send
from troubleshooting.models import DigestSent
from troubleshooting.tasks import send_weekly_digests

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

# Monday 7 December 2026, 08:15 in Helsinki (UTC+2), and the same time a week later.
MONDAY_0815_HELSINKI = "2026-12-07 06:15:00+00:00"
NEXT_MONDAY_0815_HELSINKI = "2026-12-14 06:15:00+00:00"
AUTH = str(guide_for("sync.auth_failed").title)
CONNECTION = str(guide_for("sync.connection").title)


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "http://testserver"


@pytest.fixture
def office(db):
    """A Helsinki firm: an owner, a member with a refused mailbox, a colleague whose
    mailbox cannot be reached, and a member who turned the email off."""
    firm = FirmFactory(name="Alder & Birch", time_zone="Europe/Helsinki")
    owner = MembershipFactory(firm=firm, role=Role.OWNER, user=UserFactory(email="olga@alder.test"))
    member = MembershipFactory(firm=firm, user=UserFactory(email="mikko@alder.test"))
    colleague = MembershipFactory(firm=firm, user=UserFactory(email="sara@alder.test"))
    MembershipFactory(firm=firm, user=UserFactory(email="quiet@alder.test", problems_digest=False))
    seen = datetime.datetime(2026, 12, 5, 9, 0, tzinfo=datetime.UTC)
    MailboxConnectionFactory(
        firm=firm,
        owner=member.user,
        email_address="mikko@alder.test",
        health=MailboxConnection.Health.NEEDS_REAUTH,
        problem_code="sync.auth_failed",
        problem_first_seen=seen,
        problem_last_seen=seen,
    )
    MailboxConnectionFactory(
        firm=firm,
        owner=colleague.user,
        email_address="sara@alder.test",
        health=MailboxConnection.Health.DEGRADED,
        problem_code="sync.connection",
        problem_first_seen=seen,
        problem_last_seen=seen,
        consecutive_failures=MailboxConnection.CONNECTION_PROBLEM_FAILURES,  # not a blip
    )
    return firm, owner.user, member.user, colleague.user


def _emails(smtp) -> dict[str, tuple[str, str, str]]:
    """recipient → (subject, text, html) of each email the SMTP server took."""
    found = {}
    for received in smtp.received:
        message = received.message
        found[received.rcpt_tos[0]] = (
            str(message["Subject"]),
            message.get_body(("plain",)).get_content(),
            unescape(message.get_body(("html",)).get_content()),
        )
    return found


@pytest.mark.usefixtures("tasks_run_inline")
def test_monday_morning_owners_get_the_firm_and_members_their_own_mailboxes(office, smtp):
    _firm, _owner, member, _colleague = office

    with freeze_time(MONDAY_0815_HELSINKI):
        send_weekly_digests()

    emails = _emails(smtp)
    assert set(emails) == {"olga@alder.test", "mikko@alder.test", "sara@alder.test"}
    subject, text, html = emails["olga@alder.test"]
    assert subject == "Alder & Birch: problems this week (2 open)"
    assert "New this week" in text and AUTH in text and CONNECTION in text
    assert "mikko@alder.test" in text and "sara@alder.test" in text
    assert f"http://testserver/problems/?member={member.pk}" in text
    assert f'<a href="http://testserver/problems/?member={member.pk}">{AUTH}</a>' in html
    assert "http://testserver/settings/account/" in text  # where to turn it off
    subject, text, _html = emails["mikko@alder.test"]
    assert subject == "Alder & Birch: problems this week (1 open)"
    assert AUTH in text and CONNECTION not in text and "sara@alder.test" not in text


@pytest.mark.usefixtures("tasks_run_inline")
def test_it_waits_for_monday_eight_in_the_firms_time_zone_and_sends_once(office, smtp):
    with freeze_time("2026-12-07 05:59:00+00:00"):  # 07:59 in Helsinki
        send_weekly_digests()
    assert smtp.received == []
    with freeze_time("2026-12-07 06:00:00+00:00"):
        send_weekly_digests()
    with freeze_time("2026-12-07 07:00:00+00:00"):  # the next hourly run
        send_weekly_digests()
    with freeze_time("2026-12-08 06:00:00+00:00"):  # Tuesday
        send_weekly_digests()
    assert len(smtp.received) == 3
    assert DigestSent.objects.count() == 3


def test_next_week_says_what_resolved_itself_and_what_is_still_open(office, smtp):
    firm, _owner, _member, colleague = office
    with freeze_time(MONDAY_0815_HELSINKI):
        firm_digests_send(firm=firm)
    smtp.received.clear()
    # The colleague's server came back; the member has not signed in again.
    MailboxConnection.objects.filter(owner=colleague).update(
        health=MailboxConnection.Health.OK, problem_code=""
    )

    with freeze_time(NEXT_MONDAY_0815_HELSINKI):
        firm_digests_send(firm=firm)

    emails = _emails(smtp)
    assert set(emails) == {"olga@alder.test", "mikko@alder.test"}  # sara: nothing open
    _subject, text, _html = emails["olga@alder.test"]
    resolved = text.split("Resolved since last week")[1]
    still_open = text.split("Still open")[1].split("Resolved since last week")[0]
    assert CONNECTION in resolved and "sara@alder.test" in resolved
    assert AUTH in still_open and "New this week" not in text


def test_a_week_with_nothing_open_sends_nothing(smtp, db):
    firm = FirmFactory(time_zone="Europe/Helsinki")
    MembershipFactory(firm=firm, role=Role.OWNER)

    with freeze_time(MONDAY_0815_HELSINKI):
        assert firm_digests_send(firm=firm) == 0

    assert smtp.received == [] and not DigestSent.objects.exists()


def test_each_recipient_reads_it_in_their_own_language(office, smtp):
    firm, _owner, member, _colleague = office
    member.language = "fi"
    member.save()

    with freeze_time(MONDAY_0815_HELSINKI):
        firm_digests_send(firm=firm)

    with translation.override("fi"):
        heading = translation.gettext("New this week")
        title = str(guide_for("sync.auth_failed").title)
    assert heading != "New this week"
    _subject, text, _html = _emails(smtp)["mikko@alder.test"]
    assert heading in text and title in text
    assert "New this week" in _emails(smtp)["olga@alder.test"][1]


def test_a_member_turns_it_off_in_my_account(office, client):
    _firm, _owner, member, _colleague = office
    client.force_login(member)
    page = client.get(reverse("accounts:my_account")).content.decode()
    assert 'name="problems_digest"' in page

    client.post(
        reverse("accounts:my_account"),
        {"first_name": "Mikko", "last_name": "V", "language": ""},  # the box left unticked
    )

    member.refresh_from_db()
    assert member.problems_digest is False


def test_an_owner_sets_the_firms_time_zone_and_a_wrong_one_is_explained(owner_client, firm):
    from accounts.forms import FirmProfileForm

    data = {"name": firm.name, "language": "", "time_zone": "Europe/Atlantis"}
    form = FirmProfileForm(data, instance=firm)
    assert not form.is_valid()
    assert "Europe/Atlantis is not a time zone" in str(form.errors["time_zone"])
    form = FirmProfileForm({**data, "time_zone": "Europe/Oslo"}, instance=firm)
    assert form.is_valid(), form.errors


def _send_in_own_connection(firm_id: int, barrier: threading.Barrier) -> None:
    try:
        firm = Firm.objects.get(pk=firm_id)
        barrier.wait()
        # The clock is given, not frozen: freezegun patches the process, not one thread.
        firm_digests_send(firm=firm, now=datetime.datetime.fromisoformat(MONDAY_0815_HELSINKI))
    finally:
        db_connection.close()


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_each_person_one_email(smtp, fernet_key):  # noqa: F811
    firm = FirmFactory(time_zone="Europe/Helsinki")
    owner = MembershipFactory(firm=firm, role=Role.OWNER)
    MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        health=MailboxConnection.Health.NEEDS_REAUTH,
        problem_code="sync.auth_failed",
    )
    barrier = threading.Barrier(4)
    workers = [
        threading.Thread(target=_send_in_own_connection, args=(firm.pk, barrier)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(smtp.received) == 1
    assert DigestSent.objects.count() == 1


def test_informational_notes_alone_send_nothing(smtp, db):
    firm = FirmFactory(time_zone="Europe/Helsinki")
    owner = MembershipFactory(firm=firm, role=Role.OWNER)
    connection = MailboxConnectionFactory(firm=firm, owner=owner.user)
    MailboxFolderFactory(connection=connection, name="Clients", enabled=False, messages=12)

    with freeze_time(MONDAY_0815_HELSINKI):
        assert firm_digests_send(firm=firm) == 0

    assert smtp.received == []
