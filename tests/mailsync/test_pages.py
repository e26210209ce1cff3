"""Email Sync settings and the client's Email tab, through the browser's eyes."""

from __future__ import annotations

import datetime
from html import unescape

import pytest
from django.urls import reverse

from mailsync.models import MailboxConnection, Message, MessageAttachment, MessageSource
from mailsync.selectors import EMAIL_TAB_PAGE_SIZE
from tests.factories import ClientFactory, DocumentFactory
from tests.mailsync.factories import (
    MailboxConnectionFactory,
    MailboxFolderFactory,
    MessageClientLinkFactory,
    MessageFactory,
    fernet_key,  # noqa: F401
)

CONNECT = reverse("mailsync:credentials")
QUERIES = 8  # see test_the_email_tab_query_count_does_not_grow_with_messages


def _form(mailbox_user, **extra) -> dict:
    server = mailbox_user.server
    data = {
        "preset": "",
        "kind": "imap",
        "email_address": f"{mailbox_user.name}@firm.test",
        "host": server.host,
        "port": server.imap_port,
        "security": "none",
        "username": mailbox_user.name,
        "password": mailbox_user.password,
        "action": "save",
    }
    data.update(extra)
    return data


def test_my_account_invites_to_connect_a_mailbox(owner_client):
    response = owner_client.get(reverse("accounts:my_account"))
    page = response.content.decode()
    assert "Email Sync" in page and "Sync Your Email" in page


def test_a_failed_test_cannot_be_saved_and_shows_the_step_and_reply(owner_client, mailbox_user):
    response = owner_client.post(CONNECT, _form(mailbox_user, password="wrong-password"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "The test failed, so the mailbox was not saved" in page
    assert "✗ Log in" in page and "AUTHENTICATIONFAILED" in page
    assert "sync.auth_failed" in page
    assert "wrong-password" not in page  # never rendered back
    assert not MailboxConnection.objects.exists()


def test_a_tested_mailbox_is_saved_and_its_first_sync_queued(
    owner_client, owner, mailbox_user, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr("mailsync.tasks.sync_mailbox.delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(CONNECT, _form(mailbox_user))

    assert response.status_code == 302
    connection = MailboxConnection.objects.get()
    assert connection.owner == owner.user and connection.secret
    assert mailbox_user.password not in connection.secret
    assert queued == [connection.pk]
    page = owner_client.get(reverse("accounts:my_account")).content.decode()
    assert connection.email_address in page and "Stop Email Sync" in page
    assert mailbox_user.password not in page


def test_without_a_key_saving_fails_with_a_clear_message(owner_client, mailbox_user, settings):
    settings.MAILSYNC_FERNET_KEYS = []
    settings.DEBUG = False

    response = owner_client.post(CONNECT, _form(mailbox_user))

    assert "MAILSYNC_FERNET_KEYS" in response.content.decode()
    assert not MailboxConnection.objects.exists()


def test_reauthenticate_keeps_the_record_and_its_cursor(owner_client, owner, firm, mailbox_user):
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        host=mailbox_user.server.host,
        port=mailbox_user.server.imap_port,
        username=mailbox_user.name,
        health="needs_reauth",
        problem_code="sync.auth_failed",
    )
    MailboxFolderFactory(connection=connection, last_uid=7, uidvalidity=1, state="idle")

    response = owner_client.post(
        f"{CONNECT}?connection={connection.pk}",
        {"password": mailbox_user.password, "action": "save"},
    )

    assert response.status_code == 302
    connection.refresh_from_db()
    assert (connection.health, connection.problem_code) == ("ok", "")
    assert connection.folders.get().last_uid == 7
    assert MailboxConnection.objects.count() == 1


def test_stop_asks_yes_stop_then_keeps_mail_and_wipes_the_password(owner_client, owner, firm):
    connection = MailboxConnectionFactory(firm=firm, owner=owner.user)
    MessageFactory(firm=firm)
    url = reverse("mailsync:stop", args=[connection.pk])

    assert "Yes, Stop" in owner_client.get(url).content.decode()
    owner_client.post(url)

    connection.refresh_from_db()
    assert (connection.intent, connection.secret) == ("stopped", "")
    assert Message.objects.count() == 1


def test_remove_names_the_account_and_keeps_mail(owner_client, owner, firm):
    connection = MailboxConnectionFactory(firm=firm, owner=owner.user, email_address="me@x.test")
    MessageFactory(firm=firm)
    url = reverse("mailsync:remove", args=[connection.pk])

    assert "Remove me@x.test" in owner_client.get(url).content.decode()
    owner_client.post(url)

    connection.refresh_from_db()
    assert connection.intent == "removed" and Message.objects.count() == 1
    assert "me@x.test" not in owner_client.get(reverse("accounts:my_account")).content.decode()


def test_folder_selection_switches_folders(owner_client, owner, firm):
    connection = MailboxConnectionFactory(firm=firm, owner=owner.user)
    MailboxFolderFactory(connection=connection, name="INBOX")
    MailboxFolderFactory(connection=connection, name="Clients", enabled=False)

    owner_client.post(reverse("mailsync:folders", args=[connection.pk]), {"folders": ["Clients"]})

    assert dict(connection.folders.values_list("name", "enabled")) == {
        "INBOX": False,
        "Clients": True,
    }


def test_the_shared_mailbox_is_managed_by_owners_only(owner_client, staff_client, firm):
    shared = MailboxConnectionFactory(firm=firm, owner=None, email_address="office@firm.test")

    assert "office@firm.test" in owner_client.get(reverse("accounts:firm_profile")).content.decode()
    assert staff_client.post(reverse("mailsync:sync_now", args=[shared.pk])).status_code == 404
    assert staff_client.get(f"{CONNECT}?shared=1").status_code == 403
    owner_page = owner_client.get(reverse("accounts:firm_profile")).content.decode()
    assert "Stop Email Sync" in owner_page


def test_another_members_mailbox_is_not_found(staff_client, owner, firm):
    connection = MailboxConnectionFactory(firm=firm, owner=owner.user)
    for name in ("stop", "remove", "folders", "status"):
        assert (
            staff_client.get(reverse(f"mailsync:{name}", args=[connection.pk])).status_code == 404
        )
    assert staff_client.get(f"{CONNECT}?connection={connection.pk}").status_code == 404


def _client_with_mail(firm, count: int):
    client = ClientFactory(firm=firm)
    document = DocumentFactory(client=client, original_name="statement.pdf")
    for n in range(count):
        message = MessageFactory(
            firm=firm, subject=f"Question {n}", thread_key=f"t{n % 3}", key=f"{n:064d}"
        )
        MessageClientLinkFactory(message=message, client=client)
        MessageAttachment.objects.create(
            message=message,
            client=client,
            document=document,
            filename="statement.pdf",
            sha256="0" * 64,
        )
    return client


def test_the_email_tab_shows_threads_messages_and_attachments(owner_client, firm):
    client = _client_with_mail(firm, 2)

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()

    assert "Question 0" in page and "Question 1" in page
    assert "statement.pdf" in page
    assert reverse("portal:document_download", args=[client.pk, client.documents.get().pk]) in page


def test_an_attachment_too_large_to_store_is_named_without_a_link(owner_client, firm):
    client = _client_with_mail(firm, 1)
    MessageAttachment.objects.update(document=None, filename="scan-600MB.tiff")

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()

    assert 'scan-600MB.tiff <span class="muted">(too large to store)</span>' in page
    assert "/download" not in page


def test_the_email_tab_loads_a_messages_text_when_its_preview_is_opened(owner_client, firm):
    client = _client_with_mail(firm, 1)
    message = Message.objects.get(subject="Question 0")
    Message.objects.filter(pk=message.pk).update(text_body="Dear Nora,\n> quoted <history>")

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()
    text = owner_client.get(reverse("mailsync:message_text", args=[client.pk, message.pk]))

    assert "quoted" not in page  # 50 messages quoting their threads would be megabytes
    assert reverse("mailsync:message_text", args=[client.pk, message.pk]) in page
    assert text.status_code == 200
    assert "Dear Nora,\n&gt; quoted &lt;history&gt;" in text.content.decode()


def test_a_messages_text_is_not_served_through_another_client(owner_client, firm):
    _client_with_mail(firm, 1)  # the message is linked to that client only
    other = ClientFactory(firm=firm)
    message = Message.objects.get(subject="Question 0")

    response = owner_client.get(reverse("mailsync:message_text", args=[other.pk, message.pk]))

    assert response.status_code == 404


def test_a_reply_to_a_thread_seen_before_shows_under_it_and_takes_the_reply_button(
    owner_client, firm
):
    client = ClientFactory(firm=firm)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    first = MessageFactory(firm=firm, subject="Year end", thread_key="ye", date=start)
    MessageClientLinkFactory(message=first, client=client)
    url = reverse("mailsync:client_email", args=[client.pk])
    assert reverse("mailsync:reply", args=[client.pk, first.pk]) in _page(owner_client, url)

    reply = MessageFactory(
        firm=firm,
        subject="Re: Year end",
        thread_key="ye",
        snippet="Here are the receipts",
        date=start + datetime.timedelta(hours=1),
    )
    MessageClientLinkFactory(message=reply, client=client)
    page = _page(owner_client, url)

    assert page.count('<article class="card thread">') == 1
    assert "<h2>Year end</h2>" in page
    assert "Here are the receipts" in page
    assert reverse("mailsync:reply", args=[client.pk, reply.pk]) in page
    assert reverse("mailsync:reply", args=[client.pk, first.pk]) not in page


def _mailbox_holding_mail_of(client, owner, **fields) -> MailboxConnection:
    """A mailbox of ``owner`` (None: the firm's shared one) that synced a message of
    ``client``."""
    connection = MailboxConnectionFactory(firm=client.firm, owner=owner, **fields)
    folder = MailboxFolderFactory(connection=connection, name="INBOX")
    message = MessageFactory(firm=client.firm, subject="Receipts")
    MessageClientLinkFactory(message=message, client=client)
    MessageSource.objects.create(message=message, connection=connection, folder=folder, uid=1)
    return connection


def test_a_mailbox_that_stopped_syncing_warns_on_the_clients_whose_mail_it_holds(
    owner_client, owner, firm
):
    owner.user.first_name, owner.user.last_name = "Anna", "Berg"
    owner.user.save()
    client, other = ClientFactory(firm=firm), ClientFactory(firm=firm)
    _mailbox_holding_mail_of(
        client, owner.user, email_address="anna@firm.test", health="needs_reauth"
    )

    page = _page(owner_client, reverse("mailsync:client_email", args=[client.pk]))
    elsewhere = _page(owner_client, reverse("mailsync:client_email", args=[other.pk]))

    assert "Emails from anna@firm.test (Anna Berg) stopped syncing" in unescape(page)
    assert "click Re-authenticate" in page
    assert "stopped syncing" not in elsewhere


def test_the_warning_goes_once_the_mailbox_syncs_again(owner_client, owner, firm):
    client = ClientFactory(firm=firm)
    mailbox = _mailbox_holding_mail_of(client, None, health="needs_settings")
    url = reverse("mailsync:client_email", args=[client.pk])
    assert "the firm's shared mailbox" in unescape(_page(owner_client, url))

    MailboxConnection.objects.filter(pk=mailbox.pk).update(health="ok")

    assert "stopped syncing" not in _page(owner_client, url)


def test_the_warning_speaks_the_members_language(owner_client, owner, firm):
    client = ClientFactory(firm=firm)
    _mailbox_holding_mail_of(client, owner.user, health="degraded")
    url = reverse("mailsync:client_email", args=[client.pk])
    assert "are delayed" in _page(owner_client, url)
    owner.user.language = "fi"
    owner.user.save(update_fields=["language"])

    assert "are delayed" not in _page(owner_client, url)


def _page(http, url: str) -> str:
    response = http.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_the_email_tab_says_when_a_message_had_no_date_of_its_own(owner_client, firm):
    client = _client_with_mail(firm, 2)
    Message.objects.filter(subject="Question 1").update(date_source=Message.DateSource.SERVER)

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()

    assert page.count("The message has no date: shown as received by the server") == 1


@pytest.mark.parametrize("count", [3, 30])
def test_the_email_tab_query_count_does_not_grow_with_messages(
    owner_client, firm, count, django_assert_num_queries
):
    client = _client_with_mail(firm, count)
    url = reverse("mailsync:client_email", args=[client.pk])
    owner_client.get(url)  # warm the session

    # session, user, membership (with firm), client, the page's messages (by its links),
    # their attachments, failing mailboxes that hold the client's mail, the member's emails
    # to the client not sent yet: 3 or 30 messages alike.
    with django_assert_num_queries(QUERIES):
        assert owner_client.get(url).status_code == 200


def _client_with_dated_mail(firm, count: int):
    client = ClientFactory(firm=firm)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for n in range(count):
        message = MessageFactory(
            firm=firm, subject=f"Letter {n:03d}", date=start + datetime.timedelta(hours=n)
        )
        MessageClientLinkFactory(message=message, client=client)
    return client


def test_the_email_tab_shows_the_newest_page_and_links_to_older_email(owner_client, firm):
    client = _client_with_dated_mail(firm, EMAIL_TAB_PAGE_SIZE + 2)

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()

    assert f"Letter {EMAIL_TAB_PAGE_SIZE + 1:03d}" in page and "Letter 002" in page
    assert "Letter 001" not in page and "Letter 000" not in page
    assert "?page=2" in page and "Older email" in page
    assert "Newer email" not in page


def test_the_older_page_shows_the_rest_and_links_back_to_newer_email(owner_client, firm):
    client = _client_with_dated_mail(firm, EMAIL_TAB_PAGE_SIZE + 2)
    url = reverse("mailsync:client_email", args=[client.pk])

    page = owner_client.get(f"{url}?page=2").content.decode()

    assert "Letter 001" in page and "Letter 000" in page and "Letter 002" not in page
    assert "Newer email" in page and "Older email" not in page


def test_a_page_past_the_oldest_email_goes_back_to_the_newest(owner_client, firm):
    client = _client_with_dated_mail(firm, 3)
    url = reverse("mailsync:client_email", args=[client.pk])

    assert owner_client.get(f"{url}?page=9").url == url
    assert owner_client.get(f"{url}?page=x").status_code == 200
    assert owner_client.get(f"{url}?page={10**30}").url == url


def test_a_failing_mailbox_linked_to_the_client_names_the_member(owner_client, firm, staff):
    client = _client_with_mail(firm, 1)
    connection = MailboxConnectionFactory(firm=firm, owner=staff.user, health="needs_reauth")
    folder = MailboxFolderFactory(connection=connection)
    connection.sources.create(message=Message.objects.get(), folder=folder, uid=1)

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()

    assert str(staff.user) in page and "Re-authenticate" in page


def test_a_failing_mailbox_without_this_clients_mail_says_nothing_here(
    owner_client, firm, staff, owner
):
    client = _client_with_dated_mail(firm, 1)
    other_client = _client_with_dated_mail(firm, 1)
    linked = MailboxConnectionFactory(
        firm=firm, owner=staff.user, health="needs_reauth", email_address="staff@firm.test"
    )
    unrelated = MailboxConnectionFactory(
        firm=firm, owner=owner.user, health="needs_settings", email_address="boss@firm.test"
    )
    for connection, message_client in ((linked, client), (unrelated, other_client)):
        folder = MailboxFolderFactory(connection=connection)
        message = Message.objects.get(client_links__client=message_client)
        connection.sources.create(message=message, folder=folder, uid=1)

    page = owner_client.get(reverse("mailsync:client_email", args=[client.pk])).content.decode()

    assert "staff@firm.test" in page and "boss@firm.test" not in page


@pytest.mark.parametrize("failing", [1, 4])
def test_failing_mailboxes_cost_the_email_tab_no_query_more(
    owner_client, firm, staff, failing, django_assert_num_queries
):
    client = _client_with_mail(firm, 2)
    for n in range(failing):
        connection = MailboxConnectionFactory(
            firm=firm, owner=staff.user, health="needs_reauth", email_address=f"s{n}@firm.test"
        )
        folder = MailboxFolderFactory(connection=connection)
        connection.sources.create(message=Message.objects.first(), folder=folder, uid=1)
    url = reverse("mailsync:client_email", args=[client.pk])
    owner_client.get(url)  # warm the session

    with django_assert_num_queries(QUERIES):
        page = owner_client.get(url).content.decode()

    assert all(f"s{n}@firm.test" in page for n in range(failing))
