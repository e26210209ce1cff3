"""The Problems page reads a firm's mailboxes with a problem and their folders to report in
one query (mailsync.selectors.mailbox_trouble): each card still shows once, with its own
mailbox, whatever mix of mailbox and folder trouble there is."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from mailsync.models import MailboxConnection
from tests.factories import ClientFactory
from tests.mailsync.factories import (  # noqa: F401 (fernet_key: a fixture)
    MailboxConnectionFactory,
    MailboxFolderFactory,
    MessageClientLinkFactory,
    MessageFactory,
    fernet_key,
)

pytestmark = pytest.mark.django_db

SYNC = reverse("troubleshooting:dashboard")


def _sync_page(http) -> str:
    return unescape(http.get(SYNC, {"kind": "sync"}).content.decode())


def _cards(page: str, code: str) -> int:
    return page.count(f'<span class="badge">{code}</span>')


def _mailbox(firm, owner, address: str, **fields) -> MailboxConnection:
    return MailboxConnectionFactory(firm=firm, owner=owner.user, email_address=address, **fields)


def _failed_once(firm, owner, address: str, code: str, ago: timedelta) -> MailboxConnection:
    return _mailbox(
        firm,
        owner,
        address,
        problem_code=code,
        problem_first_seen=timezone.now() - ago,
        consecutive_failures=1,
    )


def _refused(firm, owner, address: str) -> MailboxConnection:
    """A mailbox whose server refused its login."""
    return _failed_once(firm, owner, address, "sync.auth_failed", timedelta(0))


def _blip(firm, owner, address: str) -> MailboxConnection:
    """A mailbox whose server did not answer once, two minutes ago: not yet a problem."""
    return _failed_once(firm, owner, address, "sync.connection", timedelta(minutes=2))


def test_a_failing_mailbox_with_folders_left_out_shows_one_card_of_each(owner_client, firm, owner):
    mailbox = _refused(firm, owner, "anna@firm.test")
    MailboxFolderFactory(connection=mailbox, name="Clients", enabled=False, messages=3)
    MailboxFolderFactory(connection=mailbox, name="Archive", enabled=False, messages=5)

    page = _sync_page(owner_client)

    assert _cards(page, "sync.auth_failed") == 1
    assert _cards(page, "sync.labels_excluded") == 1
    assert "Archive (5), Clients (3)" in page


def test_folders_of_a_healthy_mailbox_show_without_a_mailbox_card(owner_client, firm, owner):
    mailbox = _mailbox(firm, owner, "anna@firm.test")
    MailboxFolderFactory(connection=mailbox, name="Clients", enabled=False, messages=3)
    MailboxFolderFactory(connection=mailbox, name="INBOX", gap_missing=4)

    page = _sync_page(owner_client)

    assert _cards(page, "sync.labels_excluded") == 1
    assert _cards(page, "sync.gap") == 1
    assert "anna@firm.test" in page
    assert "sync.auth_failed" not in page


def test_a_connection_blip_is_left_out_but_its_folders_are_not(owner_client, firm, owner):
    mailbox = _blip(firm, owner, "anna@firm.test")
    MailboxFolderFactory(connection=mailbox, name="Clients", enabled=False, messages=3)

    page = _sync_page(owner_client)

    assert _cards(page, "sync.labels_excluded") == 1
    assert _cards(page, "sync.connection") == 0


def test_each_mailbox_shows_its_own_trouble(owner_client, firm, owner):
    failing = _refused(firm, owner, "anna@firm.test")
    healthy = _mailbox(firm, owner, "ola@firm.test")
    MailboxFolderFactory(connection=healthy, name="Clients", enabled=False, messages=2)
    MailboxFolderFactory(connection=failing, name="INBOX")  # nothing to report

    page = _sync_page(owner_client)

    failing_card = page[page.index('<span class="badge">sync.auth_failed</span>') :]
    assert "anna@firm.test" in failing_card.split("</article>")[0]
    folders_card = page[page.index('<span class="badge">sync.labels_excluded</span>') :]
    assert "ola@firm.test" in folders_card.split("</article>")[0]


def test_folders_of_a_removed_mailbox_are_not_reported(owner_client, firm, owner):
    mailbox = _refused(firm, owner, "anna@firm.test")
    MailboxFolderFactory(connection=mailbox, name="Clients", enabled=False, messages=3)
    MailboxConnection.objects.filter(pk=mailbox.pk).update(intent=MailboxConnection.Intent.REMOVED)

    page = _sync_page(owner_client)

    assert "sync.auth_failed" not in page
    assert "sync.labels_excluded" not in page


def _every_kind_of_trouble(firm, owner, n: int) -> None:
    """Mailbox ``n`` refusing its login, with a folder left out, one renumbered at every
    visit and one missing mail."""
    mailbox = _refused(firm, owner, f"member{n}@firm.test")
    MailboxFolderFactory(connection=mailbox, name="Clients", enabled=False, messages=3)
    MailboxFolderFactory(
        connection=mailbox,
        name="Shared",
        enabled=True,
        uidvalidity_unstable_since=timezone.now(),
        reset_count=4,
    )
    MailboxFolderFactory(
        connection=mailbox,
        name="INBOX",
        enabled=True,
        gap_missing=2,
        gap_counts={"server_in_window": 12, "portal_in_window": 10},
    )


@pytest.mark.parametrize("mailboxes", [1, 6])
def test_the_sync_page_reads_the_same_queries_however_many_mailboxes_are_in_trouble(
    owner_client, firm, owner, mailboxes, django_assert_num_queries
):
    for n in range(mailboxes):
        _every_kind_of_trouble(firm, owner, n)
    _sync_page(owner_client)  # the session and the unlinked-mail count, cached

    # session, user, membership with firm, the domain check, the mailboxes with their
    # owners and folders, notes, members; nothing read again for a card (each card names
    # its member, its mailbox's server and its folders)
    with django_assert_num_queries(7):
        page = _sync_page(owner_client)

    for code in ("sync.auth_failed", "sync.labels_excluded", "sync.uidvalidity_unstable"):
        assert _cards(page, code) == mailboxes
    assert _cards(page, "sync.gap") == mailboxes
    assert str(owner.user) in page


def _brought_mail_of(mailbox: MailboxConnection, client) -> None:
    message = MessageFactory(firm=client.firm)
    MessageClientLinkFactory(message=message, client=client)
    folder = MailboxFolderFactory(connection=mailbox, name=f"INBOX-{message.pk}")
    mailbox.sources.create(message=message, folder=folder, uid=1)


def _problems_tab(http, client) -> str:
    url = reverse("troubleshooting:client_problems", args=[client.pk])
    return unescape(http.get(url).content.decode())


def test_a_clients_problems_tab_shows_the_failing_mailboxes_that_brought_its_mail(
    owner_client, firm, owner
):
    client = ClientFactory(firm=firm)
    _brought_mail_of(_refused(firm, owner, "anna@firm.test"), client)
    _refused(firm, owner, "ola@firm.test")  # none of this client's mail
    blip = _blip(firm, owner, "kari@firm.test")
    _brought_mail_of(blip, client)

    page = _problems_tab(owner_client, client)

    assert _cards(page, "sync.auth_failed") == 1
    assert "anna@firm.test" in page and str(owner.user) in page
    assert "ola@firm.test" not in page
    assert "kari@firm.test" not in page


@pytest.mark.parametrize("mailboxes", [1, 4])
def test_failing_mailboxes_cost_a_clients_problems_tab_one_query_however_many(
    owner_client, firm, owner, mailboxes, django_assert_num_queries
):
    client = ClientFactory(firm=firm)
    for n in range(mailboxes):
        _brought_mail_of(_refused(firm, owner, f"member{n}@firm.test"), client)
    _problems_tab(owner_client, client)  # the session and the client's delivery cards, cached

    # session, user, membership with firm, client, domain check, the version (and on
    # PostgreSQL its constraints, in the test's transaction), the failing mailboxes that
    # brought the client's mail with their owners, whether the client has invoices waiting
    # with no address to receive them (it has none), notes
    with django_assert_num_queries(9 + (connection.vendor == "postgresql")):
        page = _problems_tab(owner_client, client)

    assert _cards(page, "sync.auth_failed") == mailboxes
