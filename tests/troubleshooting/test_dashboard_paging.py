"""The Problems dashboard costs what it shows: counts per code and the first clients, the
cards of codes with few problems, and one code's cards a page at a time."""

from __future__ import annotations

from html import unescape

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import translation

from tests.factories import (
    ClientFactory,
    ContactAddressFactory,
    ContactFactory,
    MembershipFactory,
    UserFactory,
)
from tests.invoicing.factories import invoice_with_lines
from tests.troubleshooting.test_problem_pages import _bounce, _delivery
from troubleshooting.catalogue import guide_for
from troubleshooting.selectors import CARDS_INLINE, CARDS_PER_PAGE, CLIENTS_SHOWN

DASHBOARD = reverse("troubleshooting:dashboard")


def _bounced_clients(firm, count, prefix="Client"):
    clients = []
    for n in range(count):
        client = ClientFactory(firm=firm, display_name=f"{prefix} {n:03d}")
        _bounce(_delivery(client, f"gone{n}@{prefix.lower()}.test"))
        clients.append(client)
    return clients


def _unreachable_clients(firm, count):
    """Clients with a draft to send and no address that receives invoices."""
    for n in range(count):
        client = ClientFactory(firm=firm, display_name=f"Unreachable {n:03d}")
        ContactAddressFactory(
            contact=ContactFactory(client=client),
            address=f"info{n}@unreachable.test",
            receives_invoices=False,
        )
        invoice_with_lines(client=client)


def _page(http, **params) -> str:
    response = http.get(DASHBOARD, params)
    assert response.status_code == 200
    return unescape(response.content.decode())


def test_a_code_with_many_problems_shows_its_count_and_a_link_to_its_cards(owner_client, firm):
    _bounced_clients(firm, CARDS_INLINE + 4)
    page = _page(owner_client)
    assert f'<span class="badge">{CARDS_INLINE + 4}</span>' in page
    assert "Save and resend" not in page
    assert f"Show all {CARDS_INLINE + 4} problems" in page
    assert "?code=delivery.hard_bounce" in page


def test_a_code_with_few_problems_shows_its_cards_with_their_fixes(owner_client, firm):
    _bounced_clients(firm, CARDS_INLINE)
    page = _page(owner_client)
    assert page.count("Save and resend") == CARDS_INLINE
    assert "Show all" not in page


def test_the_dashboard_names_the_first_clients_and_counts_the_rest(owner_client, firm):
    _bounced_clients(firm, CLIENTS_SHOWN + 2)
    page = _page(owner_client)
    page = page[page.index("Clients affected:") :].split("</p>")[0]
    assert "Client 000" in page
    assert f"Client {CLIENTS_SHOWN - 1:03d}" in page
    assert f"Client {CLIENTS_SHOWN + 1:03d}" not in page
    assert "and 2 more clients" in page


def test_one_codes_problems_page_through_all_of_them(owner_client, firm):
    _bounced_clients(firm, CARDS_PER_PAGE + 3)
    first = _page(owner_client, code="delivery.hard_bounce")
    second = _page(owner_client, code="delivery.hard_bounce", page=2)
    assert first.count("Save and resend") == CARDS_PER_PAGE
    assert second.count("Save and resend") == 3
    assert "Page 1 of 2" in first
    shown = {f"Client {n:03d}" for n in range(CARDS_PER_PAGE + 3)}
    assert all(name in first or name in second for name in shown)


def test_many_clients_nobody_can_send_to_show_as_a_count_not_a_card_each(owner_client, firm):
    _unreachable_clients(firm, CARDS_INLINE + 2)
    page = _page(owner_client)
    assert f"Show all {CARDS_INLINE + 2} problems" in page
    assert "?code=delivery.not_sent_rejected_document" in page
    assert "Unreachable 000" in page  # named among the clients affected
    assert "cannot be sent to anyone" not in page  # the cards wait for the code's page


def test_a_few_clients_nobody_can_send_to_show_their_cards(owner_client, firm):
    _unreachable_clients(firm, CARDS_INLINE)
    page = _page(owner_client)
    assert page.count("1 invoice cannot be sent to anyone") == CARDS_INLINE


def test_a_codes_pages_show_its_deliveries_then_its_clients_nobody_can_send_to(owner_client, firm):
    code = "delivery.not_sent_rejected_document"
    refused = ClientFactory(firm=firm, display_name="Refused Ltd")
    delivery = _delivery(refused, "anna@refused.test")
    delivery.problem_code = code
    delivery.save(update_fields=["problem_code"])
    _unreachable_clients(firm, CARDS_PER_PAGE + 1)

    first = _page(owner_client, code=code)
    second = _page(owner_client, code=code, page=2)

    assert "Page 1 of 2" in first
    assert "Refused Ltd" in first
    assert first.count("1 invoice cannot be sent to anyone") == CARDS_PER_PAGE - 1
    assert second.count("1 invoice cannot be sent to anyone") == 2
    assert f"Unreachable {CARDS_PER_PAGE:03d}" in second


def test_a_codes_page_leaves_out_other_codes(owner_client, firm):
    _bounced_clients(firm, 2)
    other = ClientFactory(firm=firm, display_name="Alder Farm")
    _bounce(_delivery(other, "ola@alder.test"), "452", "4.2.2", "452 4.2.2 Mailbox full")
    page = _page(owner_client, code="delivery.soft_bounce")
    assert "Alder Farm" in page
    assert "Client 000" not in page


def test_a_code_without_problems_says_so(owner_client, firm):
    page = _page(owner_client, code="delivery.complaint", page=3)
    assert "No open problems" in page


@pytest.mark.parametrize("count", [2, CARDS_PER_PAGE * 2])
def test_a_codes_page_runs_the_same_queries_however_many_problems(
    owner_client, firm, count, django_assert_num_queries
):
    _bounced_clients(firm, count)
    # session, user, membership+firm, the version (on PostgreSQL after the test's pending
    # raises), until cached the counts (the failed domain checks, the deliveries' counts, the
    # clients nobody can send to) and the page's cards (its deliveries, their events, their
    # addresses), notes
    with django_assert_num_queries(11 + (connection.vendor == "postgresql")):
        owner_client.get(DASHBOARD, {"code": "delivery.hard_bounce"})
    with django_assert_num_queries(5 + (connection.vendor == "postgresql")):
        owner_client.get(DASHBOARD, {"code": "delivery.hard_bounce"})


def test_a_codes_next_page_builds_its_own_cards(owner_client, firm, django_assert_num_queries):
    _bounced_clients(firm, CARDS_PER_PAGE + 1)
    owner_client.get(DASHBOARD, {"code": "delivery.hard_bounce"})

    # the counts from the cache, the second page's deliveries, events and addresses built
    with django_assert_num_queries(8 + (connection.vendor == "postgresql")):
        page = owner_client.get(DASHBOARD, {"code": "delivery.hard_bounce", "page": 2})

    assert page.content.decode().count('<article class="card problem ') == 1


def test_a_codes_page_leaves_out_the_mailbox_filter_and_the_domain_checks(owner_client, firm):
    _bounced_clients(firm, 2)
    page = _page(owner_client, code="delivery.hard_bounce")
    assert page.count("Save and resend") == 2
    assert "Mailboxes of" not in page
    assert "Sending domain</h2>" not in page
    assert "Back to all problems" in page


def test_the_unlinked_mail_count_is_not_recounted_on_every_load(owner_client, firm):
    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            owner_client.get(DASHBOARD)
        return [q["sql"] for q in captured.captured_queries]

    first, second = queries(), queries()

    # The summary comes from the cache until an address is linked, ignored or restored,
    # or five minutes passed.
    # (the count is the query that reads the firm's unlinked messages by their stored flag:
    # raw SQL on PostgreSQL, the ORM's "linked" filter on SQLite)
    def counts(sql: str) -> bool:
        return "NOT m.linked" in sql or ("mailsync_message" in sql and '."linked"' in sql)

    assert any(counts(sql) for sql in first)
    assert not any(counts(sql) for sql in second)


def test_a_page_of_one_codes_cards_explains_the_code_once(owner_client, firm):
    _bounced_clients(firm, 5)
    page = _page(owner_client, code="delivery.hard_bounce")
    assert page.count("Save and resend") == 5
    assert page.count("Correct the contact and resend.") == 1
    assert page.index("Correct the contact and resend.") < page.index("Save and resend")


def test_a_clients_problems_tab_explains_each_card(owner_client, firm):
    (client,) = _bounced_clients(firm, 1)
    _bounce(_delivery(client, "second@client.test"))
    response = owner_client.get(reverse("troubleshooting:client_problems", args=[client.pk]))
    page = unescape(response.content.decode())
    assert page.count("Save and resend") == 2
    assert page.count("Correct the contact and resend.") == 2


def test_a_clients_problems_tab_reads_its_addresses_once_for_fixes_and_dead_domains(
    owner_client, firm
):
    from django.utils import timezone

    from portal.models import ContactAddress
    from tests.factories import ContactAddressFactory, ContactFactory
    from troubleshooting.models import AddressDomainCheck

    (client,) = _bounced_clients(firm, 1)
    ContactAddressFactory(contact=ContactFactory(client=client), address="ola@dead.test")
    AddressDomainCheck.objects.create(
        firm=firm, domain="dead.test", ok=False, summary="No mail server", checked=timezone.now()
    )
    bounced = ContactAddress.objects.get(normalized="gone0@client.test")

    with CaptureQueriesContext(connection) as queries:
        response = owner_client.get(reverse("troubleshooting:client_problems", args=[client.pk]))
    page = unescape(response.content.decode())

    assert page.count("Save and resend") == 1
    assert reverse("portal:address_edit", args=[client.pk, bounced.pk]) in page
    assert "ola@dead.test" in page and "The address cannot receive email" in page
    reads = [
        q for q in queries.captured_queries if q["sql"].startswith('SELECT "portal_contactaddress"')
    ]
    assert len(reads) == 1


def test_a_clients_problems_tab_flags_only_addresses_on_the_dead_domain_itself(owner_client, firm):
    from django.utils import timezone

    from tests.factories import ContactAddressFactory, ContactFactory
    from troubleshooting.models import AddressDomainCheck

    client = ClientFactory(firm=firm, display_name="Birch Dental")
    contact = ContactFactory(client=client)
    for address in ("ola@dead.test", "anna@notdead.test", "eva@mail.dead.test"):
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    AddressDomainCheck.objects.create(
        firm=firm, domain="dead.test", ok=False, summary="No mail server", checked=timezone.now()
    )

    page = unescape(
        owner_client.get(
            reverse("troubleshooting:client_problems", args=[client.pk])
        ).content.decode()
    )

    assert page.count("The address cannot receive email") == 1
    assert "ola@dead.test" in page
    assert "anna@notdead.test" not in page and "eva@mail.dead.test" not in page


def test_a_codes_page_shows_a_new_problem_at_once(owner_client, firm):
    _bounced_clients(firm, 2)
    assert _page(owner_client, code="delivery.hard_bounce").count("Save and resend") == 2
    _bounced_clients(firm, 1, prefix="Later")
    page = _page(owner_client, code="delivery.hard_bounce")
    assert page.count("Save and resend") == 3
    assert "Later 000" in page
    assert '<span class="badge">3</span>' in page


def test_a_cards_explanation_is_in_the_language_of_each_page(owner_client, firm):
    (client,) = _bounced_clients(firm, 1)
    url = reverse("troubleshooting:client_problems", args=[client.pk])
    why = guide_for("delivery.hard_bounce").why
    with translation.override("fi"):
        finnish = str(why)

    owner_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fi"
    finnish_page = unescape(owner_client.get(url).content.decode())
    owner_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    english_page = unescape(owner_client.get(url).content.decode())

    assert str(why) in english_page
    assert finnish != str(why)
    assert finnish in finnish_page
    assert str(why) not in finnish_page


def test_the_mailbox_filter_escapes_a_members_name(owner_client, firm):
    member = MembershipFactory(
        firm=firm, user=UserFactory(first_name="<b>Ana</b>", last_name="", email="a@firm.test")
    )

    page = owner_client.get(DASHBOARD).content.decode()

    assert f'<option value="{member.user_id}">&lt;b&gt;Ana&lt;/b&gt;</option>' in page


def test_the_mailbox_filter_names_each_member_by_name_or_else_address(owner_client, firm):
    named = MembershipFactory(
        firm=firm, user=UserFactory(first_name="Ana", last_name="Birch", email="a@firm.test")
    )
    unnamed = MembershipFactory(
        firm=firm, user=UserFactory(first_name="", last_name="", email="b@firm.test")
    )

    page = _page(owner_client, member=unnamed.user_id)

    assert f'<option value="{named.user_id}">Ana Birch</option>' in page
    assert f'<option value="{unnamed.user_id}" selected>b@firm.test</option>' in page
