"""The silent-gap check: the server's own count of a folder against what the portal holds.

Against Dovecot: stored rows removed from the portal, and messages the sync moved past
without storing, show as `sync.gap` with the numbers on the dashboard and on the member's
Email Sync, and "Re-check this folder" fetches exactly what is missing, duplicating nothing.
"""

from __future__ import annotations

import datetime
from html import unescape

from django.urls import reverse

from mailsync import services
from mailsync.engine import mailbox_sync
from mailsync.models import MailboxFolder, Message, MessageSource
from tests.factories import UserFactory
from tests.invoicing.factories import tasks_run_inline  # noqa: F401
from tests.mailsync.factories import connect_mailbox, fernet_key  # noqa: F401
from troubleshooting.catalogue import guide_for

TITLE = str(guide_for("sync.gap").title)


def _mailbox(firm, user, owner):
    return connect_mailbox(firm, user, owner=owner)


def _append(mailbox_user, make_message, count: int) -> None:
    recent = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    for number in range(count):
        mailbox_user.server.append(
            mailbox_user.name, make_message(f"Invoice question {number}"), date=recent
        )


def _check_now(connection) -> MailboxFolder:
    """The next sync counts again (the check otherwise waits GAP_CHECK_INTERVAL)."""
    MailboxFolder.objects.filter(connection=connection).update(gap_checked_at=None)
    mailbox_sync(connection)
    return MailboxFolder.objects.get(connection=connection, name="INBOX")


def _recheck(http, connection, folder, capture, **data):
    """Click "Re-check this folder"; the queued sync runs as a worker would."""
    with capture(execute=True):
        return http.post(reverse("mailsync:folder_recheck", args=[connection.pk, folder.pk]), data)


def _page(http, url: str) -> str:
    return unescape(http.get(url).content.decode())


def test_a_folder_the_portal_holds_completely_has_no_gap(firm, owner, mailbox_user, make_message):
    _append(mailbox_user, make_message, 3)
    connection = _mailbox(firm, mailbox_user, owner.user)

    mailbox_sync(connection)

    folder = MailboxFolder.objects.get(connection=connection, name="INBOX")
    assert folder.gap_checked_at is not None
    assert folder.gap_missing == 0
    assert folder.gap_counts["server_in_window"] == folder.gap_counts["portal_in_window"] == 3


def test_old_mail_outside_the_sync_window_is_not_a_gap(firm, owner, mailbox_user, make_message):
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    mailbox_user.server.append(mailbox_user.name, make_message("Ancient"), date=old)
    _append(mailbox_user, make_message, 2)
    connection = _mailbox(firm, mailbox_user, owner.user)

    mailbox_sync(connection)

    folder = MailboxFolder.objects.get(connection=connection, name="INBOX")
    assert folder.gap_missing == 0
    assert folder.gap_counts["server_messages"] == 3  # STATUS counts the old one too
    assert folder.gap_counts["server_in_window"] == 2


def test_removed_rows_show_with_the_numbers_and_a_recheck_restores_them_once(
    owner_client,
    firm,
    owner,
    mailbox_user,
    make_message,
    tasks_run_inline,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    _append(mailbox_user, make_message, 5)
    connection = _mailbox(firm, mailbox_user, owner.user)
    mailbox_sync(connection)
    lost = list(Message.objects.order_by("pk")[1:3])
    kept_ids = set(
        Message.objects.exclude(pk__in=[m.pk for m in lost]).values_list("pk", flat=True)
    )
    Message.objects.filter(pk__in=[m.pk for m in lost]).delete()

    folder = _check_now(connection)

    assert folder.gap_missing == 2
    numbers = "the server holds 5 emails since"
    dashboard = _page(owner_client, reverse("troubleshooting:dashboard"))
    assert TITLE in dashboard and "sync.gap" in dashboard
    assert numbers in dashboard and "the portal 3; 2 missing." in dashboard
    account = _page(owner_client, reverse("accounts:my_account"))
    assert numbers in account and "Re-check this folder" in account

    response = _recheck(
        owner_client, connection, folder, capture, next=reverse("troubleshooting:dashboard")
    )

    assert response.status_code == 302
    assert Message.objects.count() == 5
    assert (
        set(Message.objects.values_list("pk", flat=True)) >= kept_ids
    )  # the kept stay as they were
    assert sorted(Message.objects.values_list("subject", flat=True)) == [
        f"Invoice question {n}" for n in range(5)
    ]
    assert MessageSource.objects.filter(folder=folder).count() == 5
    folder.refresh_from_db()
    assert (folder.gap_missing, folder.recheck_requested_at) == (0, None)
    assert TITLE not in _page(owner_client, reverse("troubleshooting:dashboard"))


def test_a_source_row_removed_alone_comes_back_without_a_second_message(
    owner_client,
    firm,
    owner,
    mailbox_user,
    make_message,
    tasks_run_inline,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    _append(mailbox_user, make_message, 3)
    connection = _mailbox(firm, mailbox_user, owner.user)
    mailbox_sync(connection)
    MessageSource.objects.filter(uid=2).delete()
    folder = _check_now(connection)
    assert folder.gap_missing == 1

    _recheck(owner_client, connection, folder, capture)

    assert Message.objects.count() == 3
    assert MessageSource.objects.filter(folder=folder).count() == 3
    folder.refresh_from_db()
    assert folder.gap_missing == 0


def test_messages_the_sync_moved_past_are_found_and_fetched(
    owner_client,
    firm,
    owner,
    mailbox_user,
    make_message,
    tasks_run_inline,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    _append(mailbox_user, make_message, 2)
    connection = _mailbox(firm, mailbox_user, owner.user)
    mailbox_sync(connection)
    # Two more arrive, and the cursor moves past them without storing them (as when a
    # FETCH answered nothing for them and the sync took them for expunged).
    _append(mailbox_user, make_message, 2)
    MailboxFolder.objects.filter(connection=connection).update(last_uid=4)

    folder = _check_now(connection)

    assert folder.gap_missing == 2
    assert folder.gap_counts["server_in_window"] == 4
    assert folder.gap_counts["portal_in_window"] == 2
    assert folder.gap_counts["uidnext"] == 5

    _recheck(owner_client, connection, folder, capture)

    assert Message.objects.count() == 4
    folder.refresh_from_db()
    assert folder.gap_missing == 0


def test_only_the_mailbox_member_or_an_owner_or_admin_may_recheck(
    staff_client, firm, owner, mailbox_user, make_message
):
    connection = _mailbox(firm, mailbox_user, UserFactory())
    folder = connection.folders.get()

    response = staff_client.post(
        reverse("mailsync:folder_recheck", args=[connection.pk, folder.pk])
    )

    assert response.status_code == 404
    folder.refresh_from_db()
    assert folder.recheck_requested_at is None


def test_pop3_counts_stat_against_the_stored_uidls(firm, owner, mailbox_user, make_message):
    _append(mailbox_user, make_message, 2)
    server = mailbox_user.server
    connection = services.connection_create(
        firm=firm,
        owner=owner.user,
        kind="pop3",
        email_address=f"{mailbox_user.name}@firm.test",
        host=server.host,
        port=server.pop3_port,
        security="none",
        username=mailbox_user.name,
        password=mailbox_user.password,
    )

    mailbox_sync(connection)

    folder = MailboxFolder.objects.get(connection=connection)
    assert folder.gap_missing == 0
    assert folder.gap_counts["server_messages"] == folder.gap_counts["portal_in_window"] == 2
