"""The fixes offered on problems: in place, one click where one fits, only to who may use them;
the Gmail warning on the invoice it concerns; and when a problem is worth showing at all."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.models import Delivery
from mailsync.engine import mailbox_sync
from mailsync.models import MailboxConnection
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing.factories import invoice_with_lines
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.servers import dovecot_fixtures
from tests.troubleshooting.dkim_keys import rsa_record
from tests.troubleshooting.test_codes_from_real_signals import _mailbox, _problems_page, _shows
from tests.troubleshooting.test_problem_pages import PENDING_RAISES, _bounce, _delivery
from troubleshooting.catalogue import guide_for
from troubleshooting.models import DomainCheckRun
from troubleshooting.services import address_domains_check, domain_checks_run

dovecot = dovecot_fixtures.dovecot
mailbox_user = dovecot_fixtures.mailbox_user


def _page(http, url, **params) -> str:
    return unescape(http.get(url, params).content.decode())


DASHBOARD = reverse("troubleshooting:dashboard")


# --- Re-check DNS: only for those who may ---


@pytest.fixture
def failing_domain(firm):
    firm.sending_domain = "alder.test"
    firm.save()
    return DomainCheckRun.objects.create(
        firm=firm,
        domain="alder.test",
        results=[
            {
                "name": "spf",
                "ok": False,
                "problem_code": "domain.spf_missing",
                "summary": "No SPF record.",
                "answers": [],
                "publish": None,
            }
        ],
    )


def test_staff_see_no_recheck_button_they_could_not_use(staff_client, failing_domain):
    page = _page(staff_client, DASHBOARD)
    assert _shows(page, "domain.spf_missing")
    assert "Re-check DNS" not in page
    assert reverse("troubleshooting:recheck_domain") not in page


def test_owners_get_the_recheck_button_on_the_problem(owner_client, failing_domain):
    page = _page(owner_client, DASHBOARD, kind="domain")
    assert page.count(reverse("troubleshooting:recheck_domain")) >= 2  # card and problem


# --- Resend in one click ---


def test_a_policy_refusal_keeps_its_resend_action(owner_client, firm):
    client = ClientFactory(firm=firm)
    delivery = _delivery(client, "anna@birch.test")
    _bounce(delivery, "554", "5.7.1", "554 5.7.1 Message rejected due to local policy")
    page = _problems_page(owner_client, client)
    assert _shows(page, "delivery.rejected_policy")
    assert reverse("invoicing:delivery_resend", args=[delivery.invoice_id, delivery.pk]) in page
    assert "Open the invoice to resend" in page


def test_a_soft_bounce_is_resent_with_one_click(
    owner_client, firm, django_capture_on_commit_callbacks
):
    client = ClientFactory(firm=firm)
    invoice = invoice_with_lines(client=client, status="sent")
    delivery = _delivery(client, "anna@birch.test")
    Delivery.objects.filter(pk=delivery.pk).update(invoice=invoice)
    _bounce(delivery, "452", "4.2.2", "452 4.2.2 Mailbox full")
    url = reverse("invoicing:delivery_resend", args=[invoice.pk, delivery.pk])
    assert url in _problems_page(owner_client, client)
    with django_capture_on_commit_callbacks(execute=False):
        owner_client.post(url)
    newest = Delivery.objects.filter(client=client).latest("created")
    assert newest.pk != delivery.pk and newest.status == "queued"


# --- Wrong server settings fixed in place ---


@pytest.fixture
def wrong_port(owner, firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user, owner=owner.user, port=mailbox_user.server.pop3_port)
    mailbox_sync(connection)
    connection.refresh_from_db()
    assert connection.problem_code == "sync.server_settings"
    return connection


def _fix(http, connection, **fields):
    url = reverse("troubleshooting:fix_server_settings", args=[connection.pk])
    return http.post(url, {"host": connection.host, "security": "none", **fields}, follow=True)


def test_server_settings_are_corrected_in_place_once_they_work(
    owner_client, wrong_port, mailbox_user
):
    page = _page(owner_client, DASHBOARD)
    assert reverse("troubleshooting:fix_server_settings", args=[wrong_port.pk]) in page
    assert 'type="password"' in page and mailbox_user.password not in page

    response = _fix(
        owner_client,
        wrong_port,
        port=mailbox_user.server.imap_port,
        password=mailbox_user.password,
    )

    assert "The new server settings work and are saved" in unescape(response.content.decode())
    wrong_port.refresh_from_db()
    assert (wrong_port.port, wrong_port.problem_code) == (mailbox_user.server.imap_port, "")
    assert mailbox_sync(wrong_port).state != "failed"


def test_settings_that_fail_the_check_are_not_saved(owner_client, wrong_port, mailbox_user):
    response = _fix(
        owner_client, wrong_port, port=mailbox_user.server.imap_port, password="wrong-password"
    )
    assert "The new settings did not work either" in unescape(response.content.decode())
    wrong_port.refresh_from_db()
    assert wrong_port.port == mailbox_user.server.pop3_port


def test_another_member_cannot_change_a_mailbox_that_is_not_theirs(
    staff_client, wrong_port, mailbox_user
):
    response = _fix(
        staff_client, wrong_port, port=mailbox_user.server.imap_port, password="anything"
    )
    assert response.status_code == 404


# --- A mailbox server that cannot be reached: only once it lasts ---


def _unreachable(firm, owner, mailbox_user):
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    connection = _mailbox(firm, mailbox_user, owner=owner.user)
    MailboxConnection.objects.filter(pk=connection.pk).update(port=closed)
    return connection


def test_one_failed_connection_is_not_a_problem_yet(owner_client, owner, firm, mailbox_user):
    connection = _unreachable(firm, owner, mailbox_user)
    mailbox_sync(connection)
    connection.refresh_from_db()
    assert connection.problem_code == "sync.connection"  # recorded: the portal retries
    assert not _shows(_page(owner_client, DASHBOARD), "sync.connection")
    email_sync = _page(owner_client, reverse("accounts:my_account"))
    assert connection.email_address in email_sync
    assert "Having trouble, retrying" in email_sync
    assert "The server could not be reached" not in email_sync


def test_failures_that_persist_for_half_an_hour_are_shown(owner_client, owner, firm, mailbox_user):
    connection = _unreachable(firm, owner, mailbox_user)
    for _ in range(3):
        mailbox_sync(connection)
    # Three failures, but within minutes: still a blip.
    assert not _shows(_page(owner_client, DASHBOARD), "sync.connection")
    MailboxConnection.objects.filter(pk=connection.pk).update(
        problem_first_seen=timezone.now() - timedelta(minutes=31)
    )
    assert _shows(_page(owner_client, DASHBOARD), "sync.connection")


# --- An invoice that can go to nobody ---


def test_an_invoice_for_a_client_without_a_receiving_address_is_a_problem_on_the_client(
    owner_client, firm, django_capture_on_commit_callbacks
):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(
        contact=ContactFactory(client=client), address="anna@birch.test", receives_invoices=False
    )
    invoice = invoice_with_lines(client=client)
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("invoicing:invoice_send", args=[invoice.pk]))
    assert not Delivery.objects.filter(invoice=invoice).exists()

    page = _problems_page(owner_client, client)
    assert _shows(page, "delivery.not_sent_rejected_document")
    assert "1 invoice cannot be sent to anyone" in page
    assert "Add an address that receives invoices" in page
    assert _shows(_page(owner_client, DASHBOARD), "delivery.not_sent_rejected_document")


# --- Gmail's "dangerous" warning, on the invoice it concerns ---

PORTAL = {"_spf.portal.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}]}


@pytest.fixture
def portal_dns(settings, dns_server):
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.PORTAL_SPF_INCLUDE = "_spf.portal.test"
    settings.PORTAL_SENDING_IPS = ["192.0.2.25"]
    settings.PORTAL_DKIM_SELECTORS = [("pp1", "pp1.dkim.portal.test")]
    settings.BOUNCE_ADDRESS = "bounces@bounce.portal.test"


def _recipients_zone(**firm_records):
    return {
        **PORTAL,
        "alder.test": [{"TXT": "v=spf1 include:_spf.portal.test -all"}],
        "birch.test": [{"MX": [1, "aspmx.l.google.com"]}, {"MX": [5, "alt1.aspmx.l.google.com"]}],
        "maple.test": [{"MX": [10, "mx.maple.test"]}],
        **firm_records,
    }


def _sent_invoice(firm, from_domain: str = "alder.test"):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    google = _delivery(client, "anna@birch.test", status="delivered")
    other = _delivery(client, "ola@maple.test", status="delivered")
    Delivery.objects.filter(client=client).update(from_domain=from_domain)
    google.refresh_from_db()
    return client, google, other


def _checked(firm, dns_zone, zone):
    firm.sending_domain = "alder.test"
    firm.save()
    dns_zone(zone)
    domain_checks_run(firm=firm)
    address_domains_check(firm=firm)


def _warnings(page: str) -> int:
    return page.count('data-problem="delivery.flagged_dangerous"')


@pytest.mark.usefixtures("portal_dns")
def test_a_google_served_recipient_of_a_misaligned_domain_gets_the_warning_on_the_invoice(
    owner_client, firm, dns_zone
):
    client, google, _other = _sent_invoice(firm)
    # SPF passes, but the Return-Path is the portal's and there is no DKIM: nothing aligns.
    _checked(firm, dns_zone, _recipients_zone())

    page = _page(owner_client, google.invoice.get_absolute_url())
    assert _warnings(page) == 1  # anna@birch.test only: maple.test is not on Google
    assert str(guide_for("delivery.flagged_dangerous").title) in page

    problems = _problems_page(owner_client, client)
    assert _shows(problems, "delivery.flagged_dangerous")
    assert "anna@birch.test" in problems and "ola@maple.test" not in problems


@pytest.mark.usefixtures("portal_dns")
def test_the_problems_tab_reads_the_domain_check_once_when_the_domain_does_not_align(
    owner_client, firm, dns_zone, django_assert_num_queries
):
    client, _google, _other = _sent_invoice(firm)
    _checked(firm, dns_zone, _recipients_zone())
    # session, user, membership+firm, client, domain check, the version, dead address
    # domains, current deliveries (none: no events or addresses to read), failing mailboxes,
    # the client's reached deliveries, the Google check of their domains, notes: the latest
    # domain check is read once and handed on, not once per question.
    with django_assert_num_queries(12 + PENDING_RAISES) as queries:
        page = _problems_page(owner_client, client)
    domain_runs = [q for q in queries.captured_queries if "domaincheckrun" in q["sql"]]
    assert len(domain_runs) == 1
    assert _shows(page, "delivery.flagged_dangerous")


@pytest.mark.usefixtures("portal_dns")
def test_no_warning_for_mail_that_left_from_the_platforms_address(owner_client, firm, dns_zone):
    # The firm's domain does not align, so its invoices leave From the platform's address,
    # which passes the platform's own DMARC: Gmail has nothing to warn about.
    client, google, _other = _sent_invoice(firm, from_domain="portal.test")
    _checked(firm, dns_zone, _recipients_zone())

    assert _warnings(_page(owner_client, google.invoice.get_absolute_url())) == 0
    assert not _shows(_problems_page(owner_client, client), "delivery.flagged_dangerous")


@pytest.mark.usefixtures("portal_dns")
def test_no_warning_once_dkim_aligns_the_firms_domain(owner_client, firm, dns_zone):
    client, google, _other = _sent_invoice(firm)
    zone = _recipients_zone(
        **{
            "pp1._domainkey.alder.test": [{"CNAME": "pp1.dkim.portal.test"}],
            "pp1.dkim.portal.test": [{"TXT": rsa_record()}],
        }
    )
    _checked(firm, dns_zone, zone)

    assert _warnings(_page(owner_client, google.invoice.get_absolute_url())) == 0
    assert not _shows(_problems_page(owner_client, client), "delivery.flagged_dangerous")


@pytest.mark.usefixtures("portal_dns")
def test_the_domain_card_says_which_mechanism_aligns_and_the_key(owner_client, firm, dns_zone):
    zone = _recipients_zone(
        **{
            "pp1._domainkey.alder.test": [{"CNAME": "pp1.dkim.portal.test"}],
            "pp1.dkim.portal.test": [{"TXT": rsa_record(2048)}],
        }
    )
    _checked(firm, dns_zone, zone)
    page = _page(owner_client, DASHBOARD, kind="domain")
    assert "An RSA key of 2048 bits is published" in page
    assert "passes DMARC through DKIM" in page
    assert "the Return-Path is on bounce.portal.test" in page


# --- A spam complaint: the block list entry, for the one who may lift it ---


@pytest.fixture
def complained(firm):
    from invoicing.delivery.events import delivery_event_record

    client = ClientFactory(firm=firm)
    delivery = _delivery(client, "anna@birch.test", status="delivered")
    delivery_event_record(
        delivery=delivery,
        kind="complained",
        source="webhook",
        problem_code="delivery.complaint",
    )
    return client


def test_an_owner_goes_straight_to_the_complaining_address_on_the_block_list(
    owner_client, complained
):
    page = _problems_page(owner_client, complained)
    assert _shows(page, "delivery.complaint")
    assert f"{reverse('invoicing:suppressions')}#blocked-annabirchtest" in page
    block_list = _page(owner_client, reverse("invoicing:suppressions"))
    assert 'id="blocked-annabirchtest"' in block_list


def test_staff_are_told_an_owner_lifts_the_block_instead_of_a_link_they_cannot_use(
    staff_client, complained
):
    page = _problems_page(staff_client, complained)
    assert _shows(page, "delivery.complaint")
    assert reverse("invoicing:suppressions") not in page
    assert "A firm owner can request its removal from the block list." in page
