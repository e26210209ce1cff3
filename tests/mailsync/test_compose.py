"""Writing to a client from the portal: Write email and Reply on the client's Email tab.

Mail goes over real loopback servers: the SMTP submission server of tests/servers/smtp_auth.py
(AUTH required, each login sends only as its own addresses, Microsoft 365's refusals on
demand), Dovecot for the Sent folder the next sync reads, and the OAuth2 token endpoint of
tests/servers/oauth_server.py for Gmail's XOAUTH2. No mocked servers.
"""

from __future__ import annotations

import datetime
import hashlib
import imaplib
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from mailsync import crypto
from mailsync.engine import mailbox_sync
from mailsync.models import (
    MailboxConnection,
    MailboxFolder,
    Message,
    MessageClientLink,
    MessageSource,
    OutgoingAddress,
    OutgoingServer,
)
from mailsync.oauth import GOOGLE_MAIL_SCOPE, OAuthSecret
from mailsync.outgoing import outgoing_for
from mailsync.sending import sent_copy_file
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.mailsync.factories import (
    MailboxConnectionFactory,
    MailboxFolderFactory,
    MessageClientLinkFactory,
    MessageFactory,
    fernet_key,  # noqa: F401
)
from tests.mailsync.writing import compose_url, press_send
from tests.mailsync.writing import sending_mailbox as _mailbox
from tests.servers import oauth_server as oauth_fixtures
from tests.servers import smtp_auth
from tests.servers.oauth_server import OAuthTokenServer

# The loopback submission server (session-wide) and a clean slate per test; the same
# for the OAuth2 token endpoint.
submission_server = smtp_auth.submission_server
submission = smtp_auth.submission
oauth_server = oauth_fixtures.oauth_server
oauth_token_endpoint = oauth_fixtures.oauth_token_endpoint


def _address_pks(client, *addresses: str) -> list[str]:
    found = {a.address: str(a.pk) for c in client.contacts.all() for a in c.addresses.all()}
    return [found[address] for address in addresses]


def _write(http, client, sender: OutgoingAddress, *, to=("bea@bakery.test",), **fields):
    data = {
        "sender": sender.pk,
        "recipients": _address_pks(client, *to),
        "subject": "Your year-end accounts",
        "body": "Dear Bea,\n\nThe accounts are ready.\n\nAnn",
    }
    data.update(fields)
    return press_send(http, compose_url(client), data)


def _checked(page: str) -> list[str]:
    """The recipient checkboxes ticked on the compose form."""
    return re.findall(r'name="recipients" value="(\d+)"[^>]*checked', page)


def _page(response) -> str:
    return response.content.decode()


def _email_tab(http, client) -> str:
    return _page(http.get(reverse("mailsync:client_email", args=[client.pk])))


# --- sending ------------------------------------------------------------------------------


def test_write_email_offers_the_clients_addresses_and_the_resolved_from(
    owner_client, owner, firm, client_, submission
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")

    tab = _email_tab(owner_client, client_)
    page = _page(owner_client.get(reverse("mailsync:compose", args=[client_.pk])))

    assert "Write email" in tab
    assert "bea@bakery.test" in page and "orders@bakery.test" in page
    own = OutgoingAddress.objects.get()
    assert f'<option value="{own.pk}" selected>' in page


def test_an_email_is_delivered_from_the_members_mailbox_and_shows_on_the_email_tab(
    owner_client, owner, firm, client_, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    sender = outgoing_for(owner.user, client_)
    OutgoingAddress.objects.filter(pk=sender.pk).update(display_name="Ann Alder")
    sender.refresh_from_db()

    response = _write(owner_client, client_, sender, to=("bea@bakery.test", "orders@bakery.test"))

    assert response.status_code == 302
    assert response["Location"] == reverse("mailsync:client_email", args=[client_.pk])
    (sent,) = submission.received
    assert (sent.login, sent.mail_from) == (connection.username, "ann@alder.test")
    assert sent.rcpt_tos == ["bea@bakery.test", "orders@bakery.test"]
    email = sent.message
    assert str(email["From"]) == "Ann Alder <ann@alder.test>"
    assert str(email["To"]) == "bea@bakery.test, orders@bakery.test"
    assert email["Subject"] == "Your year-end accounts"
    assert email["Message-ID"].endswith("@alder.test>")
    assert email["In-Reply-To"] is None
    tab = _email_tab(owner_client, client_)
    assert "Your year-end accounts" in tab and "Email sent." in tab
    stored = Message.objects.get()
    assert stored.message_id == email["Message-ID"].strip("<>")
    assert MessageClientLink.objects.filter(message=stored, client=client_).exists()


def test_a_reply_carries_in_reply_to_references_and_a_re_subject(
    owner_client, owner, firm, client_, submission
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    # The thread as the sync keys it: by its root's Message-ID (mailsync.parsing).
    thread = hashlib.sha256(b"thread:root@bakery.test").hexdigest()
    earlier = MessageFactory(
        firm=firm,
        message_id="root@bakery.test",
        subject="Invoice question",
        from_address="bea@bakery.test",
        participants=" ann@alder.test bea@bakery.test ",
        references="",
        thread_key=thread,
        date=timezone.now() - datetime.timedelta(days=2),
    )
    question = MessageFactory(
        firm=firm,
        message_id="q2@bakery.test",
        subject="Re: Invoice question",
        from_address="orders@bakery.test",
        participants=" ann@alder.test orders@bakery.test ",
        references="root@bakery.test",
        in_reply_to="root@bakery.test",
        thread_key=thread,
        text_body="Which invoice?",
        date=timezone.now() - datetime.timedelta(days=1),
    )
    for message in (earlier, question):
        MessageClientLinkFactory(message=message, client=client_)
    url = reverse("mailsync:reply", args=[client_.pk, question.pk])

    assert url in _email_tab(owner_client, client_)  # "Reply" on the thread
    form = _page(owner_client.get(url))
    assert 'value="Re: Invoice question"' in form and "&gt; Which invoice?" in form
    orders = _address_pks(client_, "orders@bakery.test")[0]
    assert _checked(form) == [orders]  # the address the question came from
    sender = outgoing_for(owner.user, client_)
    response = press_send(
        owner_client,
        url,
        {
            "sender": sender.pk,
            "recipients": [orders],
            "subject": "Re: Invoice question",
            "body": "Invoice 12.",
        },
    )

    assert response.status_code == 302
    email = submission.received[0].message
    assert email["Subject"] == "Re: Invoice question"
    assert email["In-Reply-To"] == "<q2@bakery.test>"
    assert email["References"] == "<root@bakery.test> <q2@bakery.test>"
    reply = Message.objects.exclude(pk__in=[earlier.pk, question.pk]).get()
    assert reply.thread_key == thread  # shown in the same thread


def test_the_address_chosen_for_the_client_is_the_from(
    owner_client, owner, firm, client_, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    submission.allow_sender(connection.username, "hello@brand.test")
    owner_client.post(
        reverse("mailsync:sending_addresses"),
        {"connection": connection.pk, "action": "add", "address": "hello@brand.test"},
    )
    brand = OutgoingAddress.objects.get(normalized="hello@brand.test")
    owner_client.post(reverse("mailsync:client_sender", args=[client_.pk]), {"address": brand.pk})

    page = _page(owner_client.get(reverse("mailsync:compose", args=[client_.pk])))
    assert f'<option value="{brand.pk}" selected>' in page
    _write(owner_client, client_, brand)

    assert submission.received[0].message["From"].addresses[0].addr_spec == "hello@brand.test"
    assert submission.received[0].mail_from == "hello@brand.test"


def test_535_5_7_139_shows_send_smtp_auth_disabled_on_the_client(
    owner_client, owner, firm, client_, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    # Mail with this client came through this mailbox, so its problems touch the client.
    synced = MessageFactory(firm=firm, participants=" bea@bakery.test ")
    MessageClientLinkFactory(message=synced, client=client_)
    folder = MailboxFolderFactory(connection=connection)
    MessageSource.objects.create(message=synced, connection=connection, folder=folder, uid=1)
    submission.disable_smtp_auth(connection.username)
    sender = outgoing_for(owner.user, client_)

    response = _write(owner_client, client_, sender)

    page = _page(response)
    assert response.status_code == 200
    assert "The email was not sent." in page and "send.smtp_auth_disabled" in page
    assert "5.7.139" in page and "SmtpClientAuthentication is disabled" in page
    # Nothing is lost: the form comes back as typed.
    assert 'value="Your year-end accounts"' in page and "The accounts are ready." in page
    assert submission.received == []
    connection.refresh_from_db()
    assert connection.problem_code == "send.smtp_auth_disabled"
    assert connection.health == "ok"  # reading mail still works: sync goes on
    problems = _page(
        owner_client.get(reverse("troubleshooting:client_problems", args=[client_.pk]))
    )
    assert "send.smtp_auth_disabled" in problems
    assert "Sending from this mailbox is switched off by its provider" in problems
    again = _page(owner_client.get(reverse("mailsync:compose", args=[client_.pk])))
    assert 'id="send-problem"' in again and "send.smtp_auth_disabled" in again


def test_a_send_that_works_again_clears_the_recorded_problem(
    owner_client, owner, firm, client_, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    submission.disable_smtp_auth(connection.username)
    sender = outgoing_for(owner.user, client_)
    _write(owner_client, client_, sender)
    submission.state.smtp_auth_disabled.clear()  # the IT admin switched SMTP AUTH on

    assert _write(owner_client, client_, sender).status_code == 302

    connection.refresh_from_db()
    assert connection.problem_code == ""


def test_a_refused_login_when_sending_needs_reauthentication(
    owner_client, owner, firm, client_, submission
):
    connection = _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    sender = outgoing_for(owner.user, client_)
    submission.add_user(connection.username, "changed-elsewhere", sends_as=("ann@alder.test",))

    page = _page(_write(owner_client, client_, sender))

    assert "sync.auth_failed" in page and "needs re-authentication" in page
    connection.refresh_from_db()
    assert (connection.health, connection.problem_code) == ("needs_reauth", "sync.auth_failed")
    assert outgoing_for(owner.user, client_) is None  # never chosen until re-authenticated


def test_an_address_with_a_forbidden_character_is_not_sent_and_the_character_is_named(
    owner_client, owner, firm, client_, submission
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    # Imported data: no form would have accepted it.
    bad = ContactAddressFactory(contact=client_.contacts.get(), address="bea>@bakery.test")
    sender = outgoing_for(owner.user, client_)

    response = press_send(
        owner_client,
        compose_url(client_),
        {"sender": sender.pk, "recipients": [bad.pk], "subject": "Hello", "body": "Hi"},
    )

    page = _page(response)
    assert "contains the character &gt; at position 4" in page
    assert "send.invalid_recipient_chars" in page
    assert reverse("portal:address_edit", args=[client_.pk, bad.pk]) in page
    assert submission.received == []


def test_a_subject_with_a_line_break_cannot_add_headers(
    owner_client, owner, firm, client_, submission
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    sender = outgoing_for(owner.user, client_)

    page = _page(_write(owner_client, client_, sender, subject="Hi\r\nBcc: spy@evil.test"))

    assert "This must be a single line." in page
    assert submission.received == []


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x1c"])
def test_a_subject_with_any_other_line_separator_is_refused_not_a_server_error(
    owner_client, owner, firm, client_, submission, separator
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    sender = outgoing_for(owner.user, client_)

    response = _write(owner_client, client_, sender, subject=f"Hi{separator}Bcc: spy@evil.test")

    assert "This must be a single line." in _page(response)
    assert submission.received == []


def test_a_recipient_refused_by_the_server_is_reported_and_nothing_is_stored(
    owner_client, owner, firm, client_, submission
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    ContactAddressFactory(contact=client_.contacts.get(), address="unknown@bakery.test")
    sender = outgoing_for(owner.user, client_)

    page = _page(_write(owner_client, client_, sender, to=("unknown@bakery.test",)))

    assert "the server refused every recipient" in page and "550 5.1.1" in page
    assert not Message.objects.exists()


def test_an_outsider_cannot_send_as_another_firms_mailbox(
    owner, firm, client_, submission, outsider, outsider_client
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    _mailbox(submission, firm=outsider.firm, owner=outsider.user, address="eve@other.test")
    theirs = outgoing_for(owner.user, client_)
    own_client = ClientFactory(firm=outsider.firm)
    target = ContactAddressFactory(contact=ContactFactory(client=own_client))

    on_their_client = _write(outsider_client, client_, theirs)
    on_own_client = press_send(
        outsider_client,
        compose_url(own_client),
        {"sender": theirs.pk, "recipients": [target.pk], "subject": "x", "body": "x"},
    )
    choose = outsider_client.post(
        reverse("mailsync:client_sender", args=[own_client.pk]), {"address": theirs.pk}
    )

    assert on_their_client.status_code == 404
    assert on_own_client.status_code == 200 and "Select a valid choice" in _page(on_own_client)
    assert choose.status_code == 404
    assert submission.received == [] and submission.mail_from_tried == []


# --- the Sent folder: the provider's copy is the same message ----------------------------


def test_the_next_sync_of_the_sent_folder_stores_no_second_copy(
    owner_client, owner, firm, client_, submission, mailbox_user
):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Sent")
    connection = _mailbox(
        submission,
        firm=firm,
        owner=owner.user,
        address=f"{mailbox_user.name}@alder.test",
        password=mailbox_user.password,
        username=mailbox_user.name,
        host=server.host,
        port=server.imap_port,
        security="none",
    )
    MailboxFolder.objects.create(connection=connection, name="INBOX", enabled=True)
    MailboxFolder.objects.create(connection=connection, name="Sent", enabled=True)
    _write(owner_client, client_, outgoing_for(owner.user, client_))
    stored = Message.objects.get()
    # The portal filed its copy in Sent itself (a plain IMAP server; Gmail and Microsoft 365
    # file their own, which the sync meets the same way).
    assert server.message_count(mailbox_user.name, "Sent") == 1

    report = mailbox_sync(connection)

    assert report.problems == []
    assert (report.new, report.duplicates) == (0, 1)
    assert Message.objects.get() == stored
    assert MessageSource.objects.get().message == stored
    assert _email_tab(owner_client, client_).count("Your year-end accounts") == 1


def _imap_mailbox(submission, mailbox_user, *, firm, owner):
    server = mailbox_user.server
    return _mailbox(
        submission,
        firm=firm,
        owner=owner,
        address=f"{mailbox_user.name}@alder.test",
        password=mailbox_user.password,
        username=mailbox_user.name,
        host=server.host,
        port=server.imap_port,
        security="none",
    )


def _sent_copies(server, user: str, folder: str) -> list[tuple[bytes, set[str]]]:
    """(raw, flags) of each message in ``folder``, read by a second, independent session."""
    client = server.imap_login(user)
    try:
        client.select(f'"{folder}"', readonly=True)
        _typ, data = client.uid("SEARCH", "ALL")
        copies = []
        for uid in data[0].split():
            _typ, fetched = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            flags = {flag.decode() for flag in imaplib.ParseFlags(fetched[0][0])}
            copies.append((fetched[0][1], flags))
        return copies
    finally:
        client.logout()


def test_mail_written_in_the_portal_lands_read_in_the_members_sent_folder(
    owner_client, owner, firm, client_, submission, mailbox_user
):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Sent")
    _imap_mailbox(submission, mailbox_user, firm=firm, owner=owner.user)

    _write(owner_client, client_, outgoing_for(owner.user, client_))

    ((raw, flags),) = _sent_copies(server, mailbox_user.name, "Sent")
    assert "\\Seen" in flags
    relayed = submission.received[0].message
    assert f"Message-ID: {relayed['Message-ID']}".encode() in raw
    assert b"Subject: Your year-end accounts" in raw
    assert server.message_count(mailbox_user.name, "INBOX") == 0


def test_the_folder_marked_sent_wins_over_one_merely_named_sent(
    owner_client, owner, firm, client_, submission, mailbox_user
):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Sent")
    server.create_folder(mailbox_user.name, "Gesendet")  # marked \\Sent by the server
    _imap_mailbox(submission, mailbox_user, firm=firm, owner=owner.user)

    _write(owner_client, client_, outgoing_for(owner.user, client_))

    assert len(_sent_copies(server, mailbox_user.name, "Gesendet")) == 1
    assert _sent_copies(server, mailbox_user.name, "Sent") == []


def test_without_a_sent_folder_the_email_is_sent_and_no_folder_is_made(
    owner_client, owner, firm, client_, submission, mailbox_user
):
    _imap_mailbox(submission, mailbox_user, firm=firm, owner=owner.user)

    response = _write(owner_client, client_, outgoing_for(owner.user, client_))

    assert response.status_code == 302
    assert len(submission.received) == 1
    listed = mailbox_user.server.doveadm("mailbox", "list", "-u", mailbox_user.name)
    assert listed.split() == ["INBOX"]


@pytest.mark.parametrize("kind", [MailboxConnection.Kind.GMAIL, MailboxConnection.Kind.MICROSOFT])
def test_gmail_and_microsoft_file_their_own_copy_so_the_portal_files_none(
    firm, owner, mailbox_user, kind
):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Sent")
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        kind=kind,
        username=mailbox_user.name,
        secret=crypto.encrypt(mailbox_user.password),
        host=server.host,
        port=server.imap_port,
        security="none",
    )

    assert sent_copy_file(connection=connection, raw=b"Subject: x\r\n\r\nHello\r\n") == ""
    assert server.message_count(mailbox_user.name, "Sent") == 0


# --- Gmail over XOAUTH2 -------------------------------------------------------------------


def test_gmail_sends_over_xoauth2_with_a_refreshed_token(
    owner_client, owner, firm, client_, submission, oauth_token_endpoint: OAuthTokenServer
):
    login = "ann@gmail.test"
    oauth_token_endpoint.state.on_issue = lambda token, user: submission.add_token(user, token)
    refresh = oauth_token_endpoint.issue(login, scopes=("email", GOOGLE_MAIL_SCOPE))
    expired = OAuthSecret(
        access_token="at-expired",
        refresh_token=refresh,
        expires_at=timezone.now() - datetime.timedelta(minutes=10),
        scopes=("email", GOOGLE_MAIL_SCOPE),
    )
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        kind="gmail",
        email_address=login,
        username=login,
        secret=crypto.encrypt(expired.dumps()),
    )
    # Gmail's own server would be smtp.gmail.com; the test points the mailbox at loopback.
    OutgoingServer.objects.create(
        connection=connection, host=submission.host, port=submission.port, security="none"
    )
    submission.allow_sender(login, login)

    response = _write(owner_client, client_, outgoing_for(owner.user, client_))

    assert response.status_code == 302
    (sent,) = submission.received
    assert (sent.login, sent.mail_from) == (login, login)
    token, _user = oauth_token_endpoint.issued[-1]
    connection.refresh_from_db()
    assert OAuthSecret.loads(crypto.decrypt(connection.secret)).access_token == token


def test_a_revoked_gmail_grant_needs_reauthentication_when_sending(
    owner_client, owner, firm, client_, submission, oauth_token_endpoint: OAuthTokenServer
):
    refresh = oauth_token_endpoint.issue("ann@gmail.test", scopes=(GOOGLE_MAIL_SCOPE,))
    oauth_token_endpoint.revoke(refresh)
    expired = OAuthSecret(
        access_token="at-expired",
        refresh_token=refresh,
        expires_at=timezone.now() - datetime.timedelta(minutes=10),
    )
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        kind="gmail",
        email_address="ann@gmail.test",
        secret=crypto.encrypt(expired.dumps()),
    )
    OutgoingServer.objects.create(
        connection=connection, host=submission.host, port=submission.port, security="none"
    )

    page = _page(_write(owner_client, client_, outgoing_for(owner.user, client_)))

    assert "sync.auth_failed" in page and "invalid_grant" in page
    connection.refresh_from_db()
    assert connection.health == "needs_reauth"
    assert submission.received == []


@pytest.mark.parametrize("contacts", [1, 8])
def test_the_compose_page_query_count_does_not_grow_with_contacts_or_mailboxes(
    owner_client, owner, firm, client_, submission, contacts, django_assert_num_queries
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    for n in range(contacts):
        ContactAddressFactory(contact=ContactFactory(client=client_), address=f"c{n}@bakery.test")
        _mailbox(submission, firm=firm, owner=None, address=f"office{n}@alder.test")
    url = reverse("mailsync:compose", args=[client_.pk])
    owner_client.get(url)  # warm the session; mailboxes get their own sending address

    # session, user, membership, client, connections, own addresses present?, candidate
    # addresses (with their mailboxes), the member's choice for the client, contact addresses.
    with django_assert_num_queries(9):
        assert owner_client.get(url).status_code == 200


def test_an_email_sent_while_the_blob_store_fails_is_reported_sent_not_failed(
    owner_client, owner, firm, client_, submission, settings, tmp_path
):
    _mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    sender = outgoing_for(owner.user, client_)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_bytes(b"")
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {**settings.STORAGES["blobs"], "OPTIONS": {"location": str(not_a_folder)}},
    }

    response = _write(owner_client, client_, sender)

    assert response.status_code == 302  # to the Email tab, as for any sent email
    assert len(submission.received) == 1
    tab = _email_tab(owner_client, client_)
    assert "Email sent." in tab and "Do not send it again." in tab
    assert not Message.objects.exists()
