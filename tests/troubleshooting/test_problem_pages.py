"""Problems on the client they touch and on the firm dashboard, with guides and actions."""

from __future__ import annotations

import secrets
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.events import classify_reply, delivery_event_record
from invoicing.delivery.models import Delivery
from invoicing.models import Invoice
from portal.celery import app as celery_app
from portal.models import ContactAddress, Heartbeat
from tests.factories import (
    ClientFactory,
    ContactAddressFactory,
    ContactFactory,
    MembershipFactory,
    UserFactory,
)
from troubleshooting.models import DomainCheckRun, Incident, ProblemNote
from troubleshooting.selectors import CARDS_INLINE

# The test's own transaction asks for its pending version raises first (SET CONSTRAINTS, see
# troubleshooting.selectors.delivery_code_counts; PostgreSQL only, where they are deferred);
# a request in production does not.
PENDING_RAISES = int(connection.vendor == "postgresql")
DASHBOARD_QUERIES = 15 + PENDING_RAISES


def _delivery(client, address, *, add_address: bool = True, **extra):
    """A delivery to `address`, which is (still) one of the client's contact addresses
    (``add_address=False``: as it is, perhaps not one of them)."""
    if add_address and not ContactAddress.objects.filter(
        contact__client=client, normalized=address.lower()
    ):
        ContactAddressFactory(contact=ContactFactory(client=client), address=address)
    invoice = Invoice.objects.filter(client=client).first() or Invoice.objects.create(
        firm=client.firm,
        client=client,
        number=Invoice.objects.count() + 1,
        due_date=timezone.localdate() + timedelta(days=14),
        status="sent",
    )
    return Delivery.objects.create(
        firm=client.firm,
        invoice=invoice,
        client=client,
        address=address,
        normalized=address.lower(),
        verp_token=secrets.token_hex(8),
        **extra,
    )


def _bounce(
    delivery,
    reply="550",
    status="5.1.1",
    text="550 5.1.1 <x>: Recipient address rejected: User unknown",
):
    outcome = classify_reply(reply, status, text, command="RCPT")
    delivery_event_record(
        delivery=delivery,
        kind=outcome.kind,
        source="smtp",
        reply_code=reply,
        status_code=status,
        reason=outcome.reason,
        diagnostic=text,
        problem_code=outcome.problem_code,
    )


@pytest.fixture
def bounced_client(firm):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@birch.test")
    _bounce(_delivery(client, "anna@birch.test"))
    return client


def test_the_problems_tab_explains_a_hard_bounce_with_its_fix(owner_client, bounced_client):
    body = unescape(
        owner_client.get(
            reverse("troubleshooting:client_problems", args=[bounced_client.pk])
        ).content.decode()
    )
    assert "The email you sent did not reach the recipient" in body
    assert "anna@birch.test" in body
    assert "Edit address" in body
    assert "Recipient address rejected: User unknown" in body  # behind the technical fold
    assert "5.1.1" in body


def test_a_cards_technical_details_give_what_the_receiving_server_said(
    owner_client, bounced_client
):
    body = owner_client.get(
        reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    ).content.decode()
    assert "<dt>SMTP reply code</dt><dd>550</dd>" in body
    assert "<dt>Enhanced status</dt><dd>5.1.1</dd>" in body
    assert "<dt>Occurrences</dt><dd>1</dd>" in body
    assert "<dt>Server reply</dt><dd><pre>550 5.1.1 &lt;x&gt;: Recipient address" in body


def test_a_cards_technical_details_are_in_the_members_language(owner, owner_client, bounced_client):
    owner.user.language = "fi"
    owner.user.save()
    body = owner_client.get(
        reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    ).content.decode()
    assert "<dt>SMTP-vastauskoodi</dt><dd>550</dd>" in body


def test_a_later_successful_delivery_to_the_address_clears_the_problem(
    owner_client, bounced_client
):
    later = _delivery(bounced_client, "anna@birch.test")
    delivery_event_record(delivery=later, kind="delivered", source="webhook")
    body = owner_client.get(
        reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    ).content.decode()
    assert "No open problems for this client" in body


def test_fixing_the_contact_address_lifts_the_old_address_problem(owner_client, bounced_client):
    address = ContactAddress.objects.get(contact__client=bounced_client)
    response = owner_client.post(
        reverse("portal:address_edit", args=[bounced_client.pk, address.pk]),
        {"address": "anna@birch-dental.test", "is_primary": "on", "receives_invoices": "on"},
    )
    assert response.status_code == 302
    body = owner_client.get(
        reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    ).content.decode()
    assert "No open problems for this client" in body


def test_the_client_list_shows_a_problem_badge(owner_client, bounced_client):
    body = owner_client.get(reverse("portal:client_list")).content.decode()
    assert "1 problem" in body


def test_the_dashboard_groups_problems_by_code_with_affected_clients(
    owner_client, firm, bounced_client
):
    other = ClientFactory(firm=firm, display_name="Alder Farm")
    _bounce(_delivery(other, "ola@alder.test"), "452", "4.2.2", "452 4.2.2 Mailbox full")
    _bounce(_delivery(other, "kari@alder.test"))
    body = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert "The email you sent did not reach the recipient" in body
    assert "Delivery is delayed for now" in body
    assert body.index("Clients affected:") < body.index("Birch Dental")


def test_the_dashboard_links_each_affected_client_to_its_problems(
    owner_client, firm, bounced_client
):
    body = owner_client.get(reverse("troubleshooting:dashboard")).content.decode()
    link = reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    assert f'<a href="{link}">Birch Dental</a>' in body


def test_the_dashboard_escapes_client_names(owner_client, firm):
    client = ClientFactory(firm=firm, display_name="<b>Bold & Co</b>")
    _bounce(_delivery(client, "x@bold.test"))
    body = owner_client.get(reverse("troubleshooting:dashboard")).content.decode()
    assert "&lt;b&gt;Bold &amp; Co&lt;/b&gt;" in body
    assert "<b>Bold" not in body


def test_the_dashboard_filters_by_kind(owner_client, firm, bounced_client):
    body = owner_client.get(
        reverse("troubleshooting:dashboard"), {"kind": "domain"}
    ).content.decode()
    assert "did not reach the recipient" not in body


@pytest.mark.parametrize("count", [1, CARDS_INLINE])
def test_the_dashboard_runs_the_same_queries_however_many_cards_it_shows(
    owner_client, firm, count, django_assert_num_queries
):
    for n in range(count):
        client = ClientFactory(firm=firm)
        _bounce(_delivery(client, f"p{n}@gone.test"))
    # session, user, membership+firm, domain run, SET CONSTRAINTS, the firm's
    # problem-counts version, and until cached the dead address domains, the counts per
    # code with the first clients and the clients whose invoices can go to nobody; the
    # cards of the codes with few problems, their events, their addresses, the mailboxes
    # and folders with a problem, unlinked mail count, notes, members
    with django_assert_num_queries(DASHBOARD_QUERIES):
        owner_client.get(reverse("troubleshooting:dashboard"))


@pytest.mark.parametrize("count", [CARDS_INLINE + 1, 40])
def test_the_dashboard_runs_the_same_queries_however_many_problems(
    owner_client, firm, count, django_assert_num_queries
):
    for n in range(count):
        client = ClientFactory(firm=firm)
        _bounce(_delivery(client, f"p{n}@gone.test"))
    # as above, less the cards and what they read: a code with many problems shows its
    # count and first clients, its cards a page at a time
    with django_assert_num_queries(DASHBOARD_QUERIES - 4):
        owner_client.get(reverse("troubleshooting:dashboard"))


@pytest.mark.parametrize("count", [2, 20])
def test_the_problems_tab_runs_the_same_queries_however_many_problems(
    owner_client, firm, count, django_assert_num_queries
):
    client = ClientFactory(firm=firm)
    for n in range(count):
        _bounce(_delivery(client, f"p{n}@gone.test"))
    url = reverse("troubleshooting:client_problems", args=[client.pk])
    # session, user, membership+firm, client, domain run, the version, until cached the
    # cards of its deliveries and addresses (dead address domains, deliveries, events,
    # addresses), failing mailboxes that brought this client's mail, notes (no sending
    # domain: no Gmail-warning lookups; an address that receives invoices, as the client row
    # says: no lookup of invoices that can go to nobody)
    with django_assert_num_queries(12 + PENDING_RAISES):
        owner_client.get(url)
    with django_assert_num_queries(8 + PENDING_RAISES):
        owner_client.get(url)


# Per filter: session, user, membership+firm, domain run, then
#   delivery: SET CONSTRAINTS (the test's transaction), the counts' version, and until
#     cached the dead address domains, the counts per code and the clients whose invoices
#     can go to nobody; members;
#   sync (all mailboxes, or one member's): the mailboxes and folders with a problem, the
#     unlinked-mail count (not cached yet), members;
#   domain: members (the domain run holds the checks).
FILTER_QUERIES = [
    ({"kind": "delivery"}, 9 + PENDING_RAISES),
    ({"kind": "sync"}, 7),
    ({"kind": "domain"}, 5),
]


@pytest.mark.parametrize("count", [CARDS_INLINE + 1, 40])
@pytest.mark.parametrize(("params", "queries"), [*FILTER_QUERIES, ("member", 7)])
def test_each_dashboard_filter_runs_the_same_queries_however_many_problems(
    owner_client, firm, owner, count, params, queries, django_assert_num_queries
):
    for n in range(count):
        _bounce(_delivery(ClientFactory(firm=firm), f"p{n}@gone.test"))
    params = {"member": owner.user_id} if params == "member" else params
    with django_assert_num_queries(queries):
        owner_client.get(reverse("troubleshooting:dashboard"), params)


def test_a_problem_can_be_marked_as_handled_with_a_note(owner_client, bounced_client, owner):
    delivery = Delivery.objects.get(client=bounced_client)
    owner_client.post(
        reverse("troubleshooting:mark_handled"),
        {
            "code": "delivery.hard_bounce",
            "subject": f"delivery:{delivery.pk}",
            "note": "Called Anna, new address coming",
        },
    )
    note = ProblemNote.objects.get()
    assert (note.author, note.note) == (owner.user, "Called Anna, new address coming")
    body = owner_client.get(
        reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    ).content.decode()
    assert "Marked as handled by" in body


def test_domain_problems_show_the_record_to_publish(owner_client, firm):
    DomainCheckRun.objects.create(
        firm=firm,
        domain="alder.test",
        results=[
            {
                "name": "spf",
                "ok": False,
                "problem_code": "domain.spf_missing",
                "summary": "No SPF record.",
                "answers": [["alder.test", "TXT", "(none)"]],
                "publish": {
                    "name": "alder.test",
                    "type": "TXT",
                    "value": "v=spf1 include:_spf.portal.test ~all",
                },
            }
        ],
    )
    body = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert "Your domain has no SPF record" in body
    assert 'alder.test TXT "v=spf1 include:_spf.portal.test ~all"' in body
    assert "Copy record" in body


def test_recheck_runs_the_domain_checks_in_a_worker(
    owner_client, firm, settings, dns_server, dns_zone, django_capture_on_commit_callbacks
):
    firm.sending_domain = "alder.test"
    firm.save()
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    dns_zone({"alder.test": [{"TXT": "v=spf1 mx -all"}]})
    celery_app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = owner_client.post(reverse("troubleshooting:recheck_domain"))
    finally:
        celery_app.conf.task_always_eager = False
    assert response.status_code == 302
    run = DomainCheckRun.objects.get(firm=firm)
    assert run.domain == "alder.test"
    assert any(
        r["name"] == "dmarc" and r["problem_code"] == "domain.dmarc_missing" for r in run.results
    )


def test_staff_cannot_trigger_a_domain_recheck(staff_client):
    assert staff_client.post(reverse("troubleshooting:recheck_domain")).status_code == 403


def test_the_allowlist_page_lists_hosts_and_ips_with_a_full_mask(owner_client, settings):
    settings.PORTAL_SENDING_HOSTS = ["out1.portal.test"]
    settings.PORTAL_SENDING_IPS = ["192.0.2.25"]
    body = owner_client.get(reverse("troubleshooting:allowlist")).content.decode()
    assert "out1.portal.test" in body
    assert "192.0.2.25" in body
    assert "255.255.255.255" in body


def test_the_guides_page_lists_every_code(owner_client):
    from troubleshooting.catalogue import GUIDES

    body = owner_client.get(reverse("troubleshooting:guides")).content.decode()
    for guide in GUIDES:
        assert guide.code in body


def test_the_status_page_is_public_and_reports_live_workers(client, db):
    Heartbeat.objects.create(name="worker", last_seen=timezone.now())
    response = client.get(reverse("troubleshooting:status"), {"format": "json"})
    assert response.status_code == 200
    assert response.json()["workers_alive"] is True


def test_the_status_page_says_when_workers_stopped(client, db):
    Heartbeat.objects.create(name="worker", last_seen=timezone.now() - timedelta(minutes=30))
    response = client.get(reverse("troubleshooting:status"), {"format": "json"})
    assert response.status_code == 503
    assert response.json()["workers_alive"] is False


def test_an_operator_incident_note_is_shown(client, db):
    Heartbeat.objects.create(name="worker", last_seen=timezone.now())
    Incident.objects.create(message="Outlook.com is delaying mail today")
    response = client.get(reverse("troubleshooting:status"))
    assert "Outlook.com is delaying mail today" in response.content.decode()


def test_correcting_the_address_in_place_resends_to_it(
    owner_client, bounced_client, django_capture_on_commit_callbacks
):
    delivery = Delivery.objects.get(client=bounced_client)
    with django_capture_on_commit_callbacks(execute=False):
        owner_client.post(
            reverse("troubleshooting:fix_address_resend", args=[delivery.pk]),
            {"address": "anna.b@birch.test"},
        )
    address = bounced_client.contacts.get().addresses.get()
    assert address.address == "anna.b@birch.test"
    resent = Delivery.objects.filter(client=bounced_client).order_by("-pk").first()
    assert resent.address == "anna.b@birch.test"
    body = owner_client.get(
        reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    ).content.decode()
    assert "did not reach the recipient" not in body


def test_a_bad_correction_is_explained_and_changes_nothing(owner_client, bounced_client):
    delivery = Delivery.objects.get(client=bounced_client)
    response = owner_client.post(
        reverse("troubleshooting:fix_address_resend", args=[delivery.pk]),
        {"address": "anna b@birch.test"},
        follow=True,
    )
    assert "contains a space at position 5" in response.content.decode()
    assert bounced_client.contacts.get().addresses.get().address == "anna@birch.test"
    assert Delivery.objects.filter(client=bounced_client).count() == 1


@pytest.mark.parametrize("clients", [10, 10_000])
def test_the_dashboard_and_client_list_queries_do_not_grow_with_clients(
    owner_client, firm, clients, django_assert_num_queries
):
    from portal.models import Client

    Client.objects.bulk_create(
        Client(firm=firm, display_name=f"Client {n:05d}") for n in range(clients)
    )
    for client in Client.objects.filter(firm=firm)[:CARDS_INLINE]:
        _bounce(_delivery(client, f"gone{client.pk}@gone.test"))
    with django_assert_num_queries(DASHBOARD_QUERIES):  # as listed in the test above
        owner_client.get(reverse("troubleshooting:dashboard"))
    # as in tests/portal/test_client_pages.py: the badges are counted for the page only
    with django_assert_num_queries(7):
        owner_client.get(reverse("portal:client_list"))


def test_a_member_can_send_themself_a_test_email(owner_client, owner, firm):
    from django.core import mail

    response = owner_client.post(reverse("troubleshooting:send_test"), follow=True)
    assert mail.outbox[-1].to == [owner.user.email]
    assert firm.name in mail.outbox[-1].subject
    assert "A test email is on its way" in unescape(response.content.decode())


def test_the_member_filter_names_the_firms_members_by_address(owner_client, firm, owner):
    named = UserFactory(email="b@firm.test", first_name="Kari", last_name="Nordmann")
    unnamed = UserFactory(email="a@firm.test", first_name="", last_name="")
    for user in (named, unnamed):
        MembershipFactory(firm=firm, user=user, role="staff")
    MembershipFactory(user=UserFactory(email="outsider@other.test"))  # another firm's

    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())

    assert f'<option value="{unnamed.pk}">a@firm.test</option>' in page
    assert f'<option value="{named.pk}">Kari Nordmann</option>' in page
    assert page.index("a@firm.test</option>") < page.index("Kari Nordmann</option>")
    assert "outsider@other.test" not in page
