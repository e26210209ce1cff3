"""Unlinked mail: the addresses of synced mail that reached no client, to link or to ignore."""

from __future__ import annotations

import dataclasses
import datetime
import re
from email.message import EmailMessage
from html import unescape

import pytest
from django.db import connection as db_connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mailsync import selectors, services, tasks
from mailsync.models import (
    IgnoredAddress,
    MailboxConnection,
    MailboxFolder,
    MessageClientLink,
    MessageSource,
)
from mailsync.selectors import (
    UnlinkedAddress,
    UnlinkedRows,
    _address_rows_portable,
    _address_rows_postgresql,
)
from portal.models import ContactAddress, Document
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.mailsync.factories import (
    MailboxConnectionFactory,
    MessageClientLinkFactory,
    MessageFactory,
    fernet_key,  # noqa: F401
)
from troubleshooting.selectors import problems_for_firm

UNLINKED = reverse("mailsync:unlinked")
OWN = "me@alder.test"  # the member's synced mailbox
NOW = timezone.now()


@pytest.fixture
def mailbox(firm, owner):
    return MailboxConnectionFactory(firm=firm, owner=owner.user, email_address=OWN)


def _mail(firm, *addresses: str, subject: str = "Hello", days_ago: int = 0, through=None, **fields):
    """An unlinked message between the member's mailbox and ``addresses``, synced through
    ``through`` (the firm's first mailbox unless given)."""
    participants = sorted({OWN, *addresses})
    fields.setdefault("date", NOW - datetime.timedelta(days=days_ago))
    message = MessageFactory(
        firm=firm,
        subject=subject,
        from_address=addresses[0] if addresses else OWN,
        to_addresses=[OWN],
        participants=f" {' '.join(participants)} ",
        **fields,
    )
    connection = through or MailboxConnection.objects.filter(firm=firm).order_by("pk").first()
    if connection is not None:
        folder, _ = MailboxFolder.objects.get_or_create(connection=connection, name="INBOX")
        MessageSource.objects.create(
            message=message, connection=connection, folder=folder, uid=message.pk
        )
    return message


def _page(http, url=UNLINKED, **params) -> str:
    response = http.get(url, params)
    assert response.status_code == 200
    return unescape(response.content.decode())


def _not_linked(firm):
    return next((p for p in problems_for_firm(firm) if p.code == "sync.not_linked"), None)


# --- the list ----------------------------------------------------------------------------


def test_each_outside_address_is_listed_once_with_its_count_latest_date_and_a_subject(
    owner_client, firm, mailbox
):
    _mail(firm, "anna@birch.test", subject="Receipts for March", days_ago=9)
    _mail(firm, "anna@birch.test", subject="Receipts for April", days_ago=3)
    _mail(firm, "anna@birch.test", "bob@cedar.test", subject="Board meeting", days_ago=1)

    page = _page(owner_client)

    rows = page.split("<tbody>")[1].split("</tr>")
    assert "anna@birch.test" in rows[0] and ">3<" in rows[0] and "Board meeting" in rows[0]
    assert "bob@cedar.test" in rows[1] and ">1<" in rows[1] and "Board meeting" in rows[1]
    assert (NOW - datetime.timedelta(days=1)).strftime("%m/%d/%Y") in rows[0]
    assert "2 addresses" in page


def test_the_newest_address_comes_first(owner_client, firm, mailbox):
    _mail(firm, "old@birch.test", days_ago=30)
    _mail(firm, "new@cedar.test", days_ago=1)
    _mail(firm, "middle@dune.test", days_ago=10)

    page = _page(owner_client)

    assert (
        page.index("new@cedar.test") < page.index("middle@dune.test") < page.index("old@birch.test")
    )


def test_the_firms_own_mailboxes_and_members_are_not_listed(owner_client, firm, owner, mailbox):
    _mail(firm, "anna@birch.test", owner.user.email.upper())

    page = _page(owner_client)

    assert "anna@birch.test" in page
    assert OWN not in page.split("<tbody>")[1]
    assert owner.user.email not in page.split("<tbody>")[1]


def test_mail_already_on_a_client_is_not_listed(owner_client, firm, mailbox):
    message = _mail(firm, "linked@birch.test")
    MessageClientLinkFactory(message=message, client=ClientFactory(firm=firm))

    page = _page(owner_client)

    assert "linked@birch.test" not in page
    assert "Every synced email is on a client" in page


def test_the_list_is_paginated(owner_client, firm, mailbox):
    for n in range(30):
        _mail(firm, f"sender{n:02d}@birch.test", days_ago=n)

    first, second = _page(owner_client), _page(owner_client, page=2)

    assert "sender00@birch.test" in first and "sender24@birch.test" in first
    assert "sender25@birch.test" not in first
    assert "sender25@birch.test" in second and "sender29@birch.test" in second
    assert "Page 1 of 2 · 30 addresses" in first


def test_ignoring_on_a_later_page_comes_back_to_that_page(owner, firm, mailbox):
    for n in range(30):
        _mail(firm, f"sender{n:02d}@birch.test", days_ago=n)
    http = Client(enforce_csrf_checks=True)
    http.force_login(owner.user)

    page = http.get(UNLINKED, {"page": 2}).content.decode()
    form = re.search(r'action="/mail/unlinked/ignore/">(.*?)</form>', page, re.S).group(1)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))
    response = http.post(reverse("mailsync:unlinked_ignore"), fields)

    assert fields["next"] == f"{UNLINKED}?page=2"
    assert response.status_code == 302
    assert response.url == f"{UNLINKED}?page=2"
    assert IgnoredAddress.objects.filter(firm=firm, normalized=fields["address"]).exists()


@pytest.mark.parametrize("senders", [3, 60])
def test_the_page_runs_the_same_queries_however_much_unlinked_mail(
    owner_client, firm, mailbox, senders, django_assert_num_queries
):
    for n in range(senders):
        for day in range(3):
            _mail(firm, f"sender{n}@birch.test", f"cc{n}@cedar.test", days_ago=day)
    # session, user, membership+firm, unlinked mail grouped by participants, the firm's own
    # and ignored addresses, the page's sample subjects
    with django_assert_num_queries(6):
        owner_client.get(UNLINKED)


def test_the_list_is_counted_once_a_minute_not_on_every_load(
    owner_client, firm, mailbox, django_assert_num_queries
):
    _mail(firm, "anna@birch.test")
    assert "anna@birch.test" in _page(owner_client)
    _mail(firm, "bert@cedar.test")  # synced a moment later

    # session, user, membership+firm, the page's sample subjects: no grouping again
    with django_assert_num_queries(4):
        page = _page(owner_client)
    assert "bert@cedar.test" not in page  # shows within UNLINKED_ROWS_SECONDS


def test_linking_or_ignoring_shows_in_the_list_at_once(owner_client, firm, mailbox):
    _mail(firm, "news@shop.test")
    _mail(firm, "anna@birch.test")
    assert "news@shop.test" in _page(owner_client)

    owner_client.post(reverse("mailsync:unlinked_ignore"), {"address": "news@shop.test"})

    assert "news@shop.test" not in _page(owner_client).split("<tbody>")[1]


def test_the_sync_not_linked_problem_opens_this_page(owner_client, firm, mailbox):
    _mail(firm, "anna@birch.test")

    page = _page(owner_client, reverse("troubleshooting:dashboard"))

    assert "Emails were synced but not linked to a client" in page
    assert f'href="{UNLINKED}"' in page and "Link addresses to clients" in page


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="compares PostgreSQL's own count")
def test_postgresql_counts_addresses_as_the_portable_path_does(firm, mailbox):
    both = (_address_rows_postgresql, _address_rows_portable)
    _mail(firm, "anna@birch.test", days_ago=3)
    _mail(firm, "anna@birch.test", "bob@cedar.test", days_ago=1)
    _mail(firm, "bob@cedar.test", "carl@dune.test", "anna@birch.test", days_ago=7)
    _mail(firm, "undated@dune.test", date=None)
    MessageClientLinkFactory(
        message=_mail(firm, "linked@birch.test"), client=ClientFactory(firm=firm)
    )

    def rows(producer):
        return sorted(dataclasses.astuple(row) for row in producer(firm, None))

    assert rows(_address_rows_postgresql) == rows(_address_rows_portable)
    seen = [sorted(map(dataclasses.astuple, f(firm, mailbox.owner))) for f in both]
    assert seen[0] == seen[1] == rows(_address_rows_portable)
    assert len(rows(_address_rows_portable)) == 5  # four outside addresses and our own


def test_a_member_sees_only_unlinked_mail_of_their_own_and_the_shared_mailbox(
    staff_client, staff, owner_client, firm, mailbox
):
    colleague = MailboxConnectionFactory(
        firm=firm, owner=staff.user, email_address="sam@alder.test"
    )
    shared = MailboxConnectionFactory(firm=firm, owner=None, email_address="office@alder.test")
    _mail(firm, "private@friend.test", subject="Dinner on Friday")  # the owner's mailbox
    _mail(firm, "colleague@friend.test", through=colleague)
    _mail(firm, "prospect@elm.test", through=shared)

    staffs = _page(staff_client)
    assert "colleague@friend.test" in staffs and "prospect@elm.test" in staffs
    assert "private@friend.test" not in staffs and "Dinner on Friday" not in staffs
    owners = _page(owner_client)
    assert "private@friend.test" in owners and "colleague@friend.test" not in owners


# --- linking -----------------------------------------------------------------------------


def _message_with_attachment(sender: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Anna Birch <{sender}>"
    message["To"] = to
    message["Subject"] = "Our bank statements"
    message["Message-ID"] = "<statements.1@birch.test>"
    message["Date"] = "Mon, 03 Mar 2025 10:00:00 +0000"
    message.set_content("Here they are.")
    message.add_attachment(
        b"%PDF-1.4 statements", maintype="application", subtype="pdf", filename="march.pdf"
    )
    return bytes(message)


def test_linking_an_address_to_a_new_contact_moves_its_synced_mail_onto_the_client(
    owner_client, firm, owner, mailbox_user
):
    own = f"{mailbox_user.name}@firm.test"
    connection = services.connection_create(
        firm=firm,
        owner=owner.user,
        kind="imap",
        email_address=own,
        host=mailbox_user.server.host,
        port=mailbox_user.server.imap_port,
        security="none",
        username=mailbox_user.name,
        password=mailbox_user.password,
    )
    mailbox_user.server.append(mailbox_user.name, _message_with_attachment("anna@birch.test", own))
    tasks.sync_mailbox(connection.pk)
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    assert "anna@birch.test" in _page(owner_client)
    assert "Our bank statements" not in _page(owner_client, client.get_absolute_url() + "email/")

    form = _page(
        owner_client,
        reverse("mailsync:unlinked_link", args=[client.pk]),
        address="anna@birch.test",
    )
    assert 'value="Anna Birch"' in form  # the name it sent mail with, for the new contact
    response = owner_client.post(
        reverse("mailsync:unlinked_link", args=[client.pk]) + "?address=anna@birch.test",
        {"address": "anna@birch.test", "contact": "", "new_contact_name": "Anna Birch"},
        follow=True,
    )

    page = unescape(response.content.decode())
    assert "anna@birch.test now belongs to Birch Dental: 1 email is on its Email tab." in page
    assert "anna@birch.test" not in page.split("</ul>", 1)[-1]  # gone from the list
    address = ContactAddress.objects.get(normalized="anna@birch.test")
    assert address.contact.client == client and address.contact.name == "Anna Birch"
    email_tab = _page(owner_client, reverse("mailsync:client_email", args=[client.pk]))
    assert "Our bank statements" in email_tab and "march.pdf" in email_tab
    assert Document.objects.get(client=client).original_name == "march.pdf"
    assert _not_linked(firm) is None


def test_linking_to_an_existing_contact_adds_the_address_to_it(owner_client, firm, mailbox):
    message = _mail(firm, "anna.private@mail.test", subject="Tax return")
    client = ClientFactory(firm=firm)
    contact = ContactFactory(client=client, name="Anna Birch")
    ContactAddressFactory(contact=contact, address="anna@birch.test")

    owner_client.post(
        reverse("mailsync:unlinked_link", args=[client.pk]),
        {"address": "anna.private@mail.test", "contact": str(contact.pk)},
    )

    assert sorted(contact.addresses.values_list("address", flat=True)) == [
        "anna.private@mail.test",
        "anna@birch.test",
    ]
    assert MessageClientLink.objects.filter(message=message, client=client).exists()
    assert "Tax return" in _page(owner_client, reverse("mailsync:client_email", args=[client.pk]))


def test_a_new_contact_needs_a_name(owner_client, firm, mailbox):
    _mail(firm, "anna@birch.test")
    client = ClientFactory(firm=firm)

    response = owner_client.post(
        reverse("mailsync:unlinked_link", args=[client.pk]),
        {"address": "anna@birch.test", "contact": "", "new_contact_name": " "},
    )

    assert "Enter the new contact's name, or choose a contact." in unescape(
        response.content.decode()
    )
    assert not ContactAddress.objects.exists()


def test_an_address_no_contact_may_hold_is_refused_with_the_reason(owner_client, firm, mailbox):
    odd = "odd\u00b4name@birch.test"  # an acute accent: mail servers pass it, senders refuse it
    _mail(firm, odd)
    client = ClientFactory(firm=firm)

    response = owner_client.post(
        reverse("mailsync:unlinked_link", args=[client.pk]),
        {"address": odd, "contact": "", "new_contact_name": "Odd"},
    )

    page = unescape(response.content.decode())
    assert "This address cannot be added to a contact" in page
    assert "which email addresses cannot contain" in page
    assert not ContactAddress.objects.exists()


def test_the_link_page_says_at_once_when_an_address_cannot_be_linked(owner_client, firm, mailbox):
    client = ClientFactory(firm=firm)

    page = _page(
        owner_client,
        reverse("mailsync:unlinked_link", args=[client.pk]),
        address="two@@birch.test",
    )

    assert "This address cannot be added to a contact" in page
    assert "Ignore this address" in page and "New contact" not in page
    assert not ContactAddress.objects.exists()


def test_clients_are_found_by_name_contact_or_address(owner_client, firm, mailbox):
    birch = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(
        contact=ContactFactory(client=ClientFactory(firm=firm, display_name="Cedar Farm")),
        address="ola@cedar.test",
    )
    url = reverse("mailsync:unlinked_choose_client")

    by_name = _page(owner_client, url, address="anna@mail.test", q="birch")
    by_address = _page(owner_client, url, address="anna@mail.test", q="cedar.test")

    assert "Birch Dental" in by_name and "Cedar Farm" not in by_name
    assert reverse("mailsync:unlinked_link", args=[birch.pk]) in by_name
    assert "Cedar Farm" in by_address and "Birch Dental" not in by_address


def test_the_search_answers_htmx_with_just_the_results(owner_client, firm, mailbox):
    ClientFactory(firm=firm, display_name="Birch Dental")

    response = owner_client.get(
        reverse("mailsync:unlinked_choose_client"),
        {"address": "anna@mail.test", "q": "birch"},
        HTTP_HX_REQUEST="true",
    )

    body = response.content.decode()
    assert "Birch Dental" in body and "<html" not in body


def test_clients_with_contacts_at_the_same_domain_are_suggested(owner_client, firm, mailbox):
    ContactAddressFactory(
        contact=ContactFactory(client=ClientFactory(firm=firm, display_name="Birch Dental")),
        address="reception@birch.test",
    )
    ClientFactory(firm=firm, display_name="Cedar Farm")

    page = _page(
        owner_client, reverse("mailsync:unlinked_choose_client"), address="anna@birch.test"
    )

    assert "Clients with contacts at the same domain" in page
    assert "Birch Dental" in page and "Cedar Farm" not in page


# --- ignoring ----------------------------------------------------------------------------


def test_ignoring_an_address_removes_it_from_the_list_and_the_problem_count(
    owner_client, firm, mailbox
):
    _mail(firm, "news@shop.test", subject="Spring sale")
    _mail(firm, "news@shop.test", subject="Summer sale")
    _mail(firm, "anna@birch.test", subject="Receipts")
    assert _not_linked(firm).occurrences == 2  # addresses waiting for a decision

    response = owner_client.post(
        reverse("mailsync:unlinked_ignore"),
        {"address": "news@shop.test", "next": UNLINKED},
        follow=True,
    )

    page = unescape(response.content.decode())
    assert "news@shop.test is ignored" in page
    assert "news@shop.test" not in page.split("<tbody>")[1]
    assert "anna@birch.test" in page
    assert _not_linked(firm).occurrences == 1


def test_ignoring_every_address_clears_the_problem(owner_client, firm, mailbox):
    _mail(firm, "news@shop.test")

    owner_client.post(reverse("mailsync:unlinked_ignore"), {"address": "News@Shop.test"})

    assert _not_linked(firm) is None
    assert IgnoredAddress.objects.get(firm=firm).normalized == "news@shop.test"


def test_mail_that_also_names_an_address_nobody_decided_about_is_still_reported(
    owner_client, firm, mailbox
):
    _mail(firm, "news@shop.test", "anna@birch.test")

    owner_client.post(reverse("mailsync:unlinked_ignore"), {"address": "news@shop.test"})

    assert _not_linked(firm).occurrences == 1
    assert "anna@birch.test" in _page(owner_client)


def test_an_ignored_address_can_be_listed_again(owner_client, firm, owner, mailbox):
    _mail(firm, "news@shop.test")
    owner_client.post(reverse("mailsync:unlinked_ignore"), {"address": "news@shop.test"})
    ignored = IgnoredAddress.objects.get()
    assert "news@shop.test" in _page(owner_client, reverse("mailsync:unlinked_ignored"))

    owner_client.post(reverse("mailsync:unlinked_unignore", args=[ignored.pk]))

    assert "news@shop.test" in _page(owner_client)
    assert _not_linked(firm).occurrences == 1


def test_linking_an_ignored_address_stops_ignoring_it(owner_client, firm, owner, mailbox):
    _mail(firm, "anna@birch.test")
    services.address_ignore(firm=firm, normalized="anna@birch.test", user=owner.user)
    client = ClientFactory(firm=firm)

    owner_client.post(
        reverse("mailsync:unlinked_link", args=[client.pk]),
        {"address": "anna@birch.test", "contact": "", "new_contact_name": "Anna"},
    )

    assert not IgnoredAddress.objects.exists()


# --- other firms -------------------------------------------------------------------------


def test_another_firm_sees_none_of_this_firms_unlinked_mail(outsider_client, firm, mailbox):
    _mail(firm, "anna@birch.test", subject="SECRET SUBJECT")

    page = _page(outsider_client)

    assert "anna@birch.test" not in page and "SECRET SUBJECT" not in page


def test_another_firm_cannot_link_to_this_firms_client(outsider_client, firm, mailbox):
    message = _mail(firm, "anna@birch.test")
    client = ClientFactory(firm=firm)
    url = reverse("mailsync:unlinked_link", args=[client.pk])

    get = outsider_client.get(url, {"address": "anna@birch.test"})
    post = outsider_client.post(
        url, {"address": "anna@birch.test", "contact": "", "new_contact_name": "Eve"}
    )

    assert get.status_code == post.status_code == 404
    assert not ContactAddress.objects.exists()
    assert not MessageClientLink.objects.filter(message=message).exists()


def test_another_firms_search_does_not_find_this_firms_clients(outsider_client, firm):
    ClientFactory(firm=firm, display_name="Birch Dental")

    page = _page(
        outsider_client,
        reverse("mailsync:unlinked_choose_client"),
        address="anna@birch.test",
        q="Birch",
    )

    assert "Birch Dental" not in page


def test_ignoring_in_another_firm_changes_nothing_here(outsider_client, firm, owner, mailbox):
    _mail(firm, "news@shop.test")
    ignored = services.address_ignore(firm=firm, normalized="old@shop.test", user=owner.user)

    outsider_client.post(reverse("mailsync:unlinked_ignore"), {"address": "news@shop.test"})
    restore = outsider_client.post(reverse("mailsync:unlinked_unignore", args=[ignored.pk]))

    assert restore.status_code == 404
    assert list(IgnoredAddress.objects.filter(firm=firm)) == [ignored]
    assert _not_linked(firm).occurrences == 1


def test_the_cached_rows_give_back_every_address_with_its_dates_to_the_microsecond(
    monkeypatch,
):
    when = datetime.datetime(2026, 12, 7, 9, 30, 1, 123456, tzinfo=datetime.UTC)
    rows = [
        UnlinkedAddress("ann@a.test", 2, when, 7, when, when + datetime.timedelta(days=1)),
        UnlinkedAddress("bob@b.test", 1, None, 8, when, when, "Hello", "Bob"),
    ]
    monkeypatch.setattr(selectors, "unlinked_addresses", lambda **_kwargs: rows)

    cached = UnlinkedRows(selectors._unlinked_address_tuples(firm=None, viewer=None))

    assert cached[:2] == rows and cached[1] == rows[1] and len(cached) == 2
