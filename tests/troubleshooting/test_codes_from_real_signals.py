"""Every problem code, produced from a real signal and shown on the right client with its guide.

Signals: refusals from the SMTP server on loopback, ESP webhooks posted to anymail's real
URLs, answers from the DNS server on loopback. Codes nothing can signal are guidance only
(`Guide.detectable` False, listed in the README). Mailbox (sync.*) codes come from Dovecot in
tests/mailsync and are pinned below as well.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery import sender as invoice_sender
from invoicing.delivery.models import Delivery
from invoicing.delivery.tasks import deliveries_sending_expire_task
from mailsync import services as mailsync_services
from mailsync.engine import mailbox_sync
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, UserFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.servers import dovecot_fixtures
from tests.servers import oauth_server as oauth_fixtures
from tests.servers import smtp as smtp_fixtures
from tests.servers.smtp import FULL, POLICY, UNKNOWN
from troubleshooting.catalogue import GUIDES, guide_for
from troubleshooting.models import DomainCheckRun
from troubleshooting.services import domain_checks_run

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline
dovecot = dovecot_fixtures.dovecot
mailbox_user = dovecot_fixtures.mailbox_user
oauth_server = oauth_fixtures.oauth_server
oauth_token_endpoint = oauth_fixtures.oauth_token_endpoint

SECRET = "user:pass"
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []  # one signal, one attempt: no automatic retry
    settings.SITE_URL = "http://testserver"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}


def _client(firm, *addresses, name="Birch Dental"):
    client = ClientFactory(firm=firm, display_name=name)
    contact = ContactFactory(client=client)
    for address in addresses:
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    return client


def _send(http, invoice, capture):
    with capture(execute=True):
        http.post(reverse("invoicing:invoice_send", args=[invoice.pk]))


def _problems_page(http, client) -> str:
    url = reverse("troubleshooting:client_problems", args=[client.pk])
    return unescape(http.get(url).content.decode())


def _shows(page: str, code: str) -> bool:
    return str(guide_for(code).title) in page and code in page


@pytest.mark.usefixtures("tasks_run_inline")
@pytest.mark.parametrize(
    ("address", "code"),
    [
        (UNKNOWN, "delivery.hard_bounce"),
        (FULL, "delivery.soft_bounce"),
        (POLICY, "delivery.rejected_policy"),
        ("anna smith@client.test", "send.invalid_recipient_chars"),
        ("anna@client", "delivery.not_sent_rejected_document"),
    ],
)
def test_a_refusal_at_send_time_shows_on_the_client(
    staff_client, firm, smtp, django_capture_on_commit_callbacks, address, code
):
    client = _client(firm, address)
    other = _client(firm, "someone@else.test", name="Unrelated Ltd")
    _send(staff_client, invoice_with_lines(client=client), django_capture_on_commit_callbacks)
    assert _shows(_problems_page(staff_client, client), code)
    assert not _shows(_problems_page(staff_client, other), code)


@pytest.mark.usefixtures("tasks_run_inline")
def test_sending_again_to_a_hard_bounced_address_is_skipped_and_shown(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    client = _client(firm, UNKNOWN)
    _send(staff_client, invoice_with_lines(client=client), django_capture_on_commit_callbacks)
    _send(staff_client, invoice_with_lines(client=client), django_capture_on_commit_callbacks)
    assert _shows(_problems_page(staff_client, client), "delivery.suppressed")
    assert len([r for r in smtp.received if UNKNOWN in r.rcpt_tos]) == 0


@pytest.mark.usefixtures("tasks_run_inline")
def test_repeated_soft_bounces_block_the_address(
    staff_client, firm, smtp, settings, django_capture_on_commit_callbacks
):
    settings.SUPPRESS_AFTER_SOFT_BOUNCES = 3
    client = _client(firm, FULL)
    for _ in range(3):
        invoice = invoice_with_lines(client=client)
        _send(staff_client, invoice, django_capture_on_commit_callbacks)
    assert _shows(_problems_page(staff_client, client), "delivery.blocked_repeated_failures")


@pytest.fixture
def webhook(client, django_capture_on_commit_callbacks):
    from portal.celery import app as celery_app

    def post(body: dict):
        celery_app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True):
                return client.post(
                    "/webhooks/anymail/postmark/tracking/",
                    data=json.dumps(body),
                    content_type="application/json",
                    headers={"Authorization": AUTH},
                )
        finally:
            celery_app.conf.task_always_eager = False

    return post


def _sent_delivery(firm, address):
    client = _client(firm, address)
    invoice = invoice_with_lines(client=client, status="sent")
    return Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address=address,
        normalized=address,
        status="sent",
        esp_message_id=f"pm-{address}",
        verp_token=address.split("@")[0],
    )


def test_an_esp_complaint_shows_on_the_client(owner_client, firm, webhook):
    delivery = _sent_delivery(firm, "anna@birch.test")
    webhook(
        {
            "RecordType": "SpamComplaint",
            "ID": 42,
            "Type": "SpamComplaint",
            "MessageID": delivery.esp_message_id,
            "Email": "anna@birch.test",
            "BouncedAt": "2026-11-05T16:33:54Z",
            "Details": "",
            "Description": "",
            "Subject": "Invoice",
            "From": "x@portal.test",
            "Tag": "",
            "Name": "Spam complaint",
            "TypeCode": 512,
            "Inactive": True,
            "CanActivate": False,
        }
    )
    assert _shows(_problems_page(owner_client, delivery.client), "delivery.complaint")


def test_an_esp_bounce_for_a_dead_domain_shows_an_invalid_address(owner_client, firm, webhook):
    delivery = _sent_delivery(firm, "anna@birch-gone.test")
    webhook(
        {
            "RecordType": "Bounce",
            "ID": 43,
            "Type": "HardBounce",
            "TypeCode": 1,
            "MessageID": delivery.esp_message_id,
            "Email": "anna@birch-gone.test",
            "BouncedAt": "2026-11-05T16:33:54Z",
            "Name": "Hard bounce",
            "Tag": "",
            "Details": "smtp;550 5.1.2 Host or domain name not found. Name service error",
            "Description": "",
            "Subject": "Invoice",
            "From": "x@portal.test",
            "Inactive": True,
            "CanActivate": True,
        }
    )
    assert _shows(_problems_page(owner_client, delivery.client), "delivery.invalid_address")


def test_a_send_cut_short_by_a_dead_worker_shows_outcome_unknown_on_client_and_dashboard(
    owner_client, firm, smtp, django_capture_on_commit_callbacks
):
    client = _client(firm, "anna@birch.test")
    other = _client(firm, "someone@else.test", name="Unrelated Ltd")
    invoice = invoice_with_lines(client=client)
    # The send is queued (the task stays on the broker), then a worker claims the group and
    # dies before any SMTP: the delivery is left "sending" with its claim's time.
    with django_capture_on_commit_callbacks(execute=False):
        owner_client.post(reverse("invoicing:invoice_send", args=[invoice.pk]))
    delivery = Delivery.objects.get()
    invoice_sender._group_claim([delivery.pk])
    Delivery.objects.filter(pk=delivery.pk).update(
        claimed_at=timezone.now() - invoice_sender.SENDING_LEASE - timedelta(minutes=1)
    )

    deliveries_sending_expire_task()  # the watchdog, as beat runs it

    assert smtp.received == []
    page = _problems_page(owner_client, client)
    assert _shows(page, "delivery.outcome_unknown")
    assert "sent at most once" in page  # the event's own words, under the details
    assert "Open the invoice to resend" in page
    assert not _shows(_problems_page(owner_client, other), "delivery.outcome_unknown")
    dashboard = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(dashboard, "delivery.outcome_unknown")
    assert "Birch Dental" in dashboard


PORTAL = {"_spf.portal.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}]}


@pytest.mark.parametrize(
    ("zone", "code"),
    [
        ({"alder.test": [{"A": "192.0.2.1"}]}, "domain.spf_missing"),
        ({"alder.test": [{"TXT": "v=spf1 mx -all"}, {"TXT": "v=spf1 -all"}]}, "domain.spf_invalid"),
        (
            {
                "alder.test": [
                    {
                        "TXT": "v=spf1 "
                        + " ".join(f"include:s{n}.alder.test" for n in range(11))
                        + " include:_spf.portal.test -all"
                    }
                ],
                **{f"s{n}.alder.test": [{"TXT": "v=spf1 -all"}] for n in range(11)},
            },
            "domain.spf_too_many_lookups",
        ),
        ({"alder.test": [{"A": "192.0.2.1"}]}, "domain.dkim_missing"),
        ({"alder.test": [{"A": "192.0.2.1"}]}, "domain.dmarc_missing"),
        ({"alder.test": [{"A": "192.0.2.1"}]}, "domain.via_shown"),
        (
            {
                "alder.test": [{"TXT": "v=spf1 -all"}],
                "_dmarc.alder.test": [{"TXT": "v=DMARC1; p=reject"}],
            },
            "domain.dmarc_misaligned",
        ),
    ],
)
def test_a_dns_answer_shows_the_domain_problem_on_the_dashboard(
    owner_client, firm, settings, dns_server, dns_zone, zone, code
):
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.PORTAL_SPF_INCLUDE = "_spf.portal.test"
    settings.PORTAL_SENDING_IPS = ["192.0.2.25"]
    settings.PORTAL_DKIM_SELECTORS = [("pp1", "pp1.dkim.portal.test")]
    firm.sending_domain = "alder.test"
    firm.save()
    dns_zone({**PORTAL, **zone})
    domain_checks_run(firm=firm)
    assert DomainCheckRun.objects.filter(firm=firm).exists()
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, code)


def _mail(sender: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: me@firm.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n"
        "Date: Mon, 03 Mar 2025 10:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()


def _mailbox(firm, user, *, owner, port=None):
    server = user.server
    return mailsync_services.connection_create(
        firm=firm,
        owner=owner,
        kind="imap",
        email_address=f"{user.name}@firm.test",
        host=server.host,
        port=port or server.imap_port,
        security="none",
        username=user.name,
        password=user.password,
    )


def test_a_refused_mailbox_login_shows_on_its_clients_naming_the_member(
    owner_client, firm, mailbox_user
):
    client = _client(firm, "anna@birch.test")
    member = UserFactory(first_name="Mikko", last_name="Virtanen")
    connection = _mailbox(firm, mailbox_user, owner=member)
    mailbox_user.server.append(mailbox_user.name, _mail("anna@birch.test", "Receipts March"))
    mailbox_sync(connection)
    mailbox_user.server.set_password(mailbox_user.name, "changed-on-the-server")
    mailbox_sync(connection)
    page = _problems_page(owner_client, client)
    assert _shows(page, "sync.auth_failed")
    assert "Only Mikko Virtanen can fix this" in page
    unrelated = _client(firm, "nobody@else.test", name="Unrelated Ltd")
    assert not _shows(_problems_page(owner_client, unrelated), "sync.auth_failed")


def test_a_member_sees_the_fix_for_their_own_mailbox(owner_client, owner, firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user, owner=owner.user)
    mailbox_user.server.set_password(mailbox_user.name, "changed-on-the-server")
    mailbox_sync(connection)
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.auth_failed")
    assert f"?connection={connection.pk}" in page


def test_wrong_server_settings_show_on_the_dashboard(owner_client, owner, firm, mailbox_user):
    connection = _mailbox(firm, mailbox_user, owner=owner.user, port=mailbox_user.server.pop3_port)
    mailbox_sync(connection)
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.server_settings")


def test_a_mailbox_that_cannot_be_reached_shows_as_delayed(owner_client, owner, firm, mailbox_user):
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    connection = _mailbox(firm, mailbox_user, owner=owner.user)
    connection.port = closed
    connection.save()
    for _ in range(3):
        mailbox_sync(connection)
    # Shown once it persists (3 failures, the first over half an hour ago), not after a blip.
    connection.__class__.objects.filter(pk=connection.pk).update(
        problem_first_seen=timezone.now() - timedelta(minutes=31)
    )
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.connection")


def test_synced_mail_that_reaches_no_client_is_reported(owner_client, owner, firm, mailbox_user):
    _client(firm, "anna@birch.test")
    connection = _mailbox(firm, mailbox_user, owner=owner.user)
    mailbox_user.server.append(mailbox_user.name, _mail("stranger@nowhere.test", "Hello there"))
    mailbox_sync(connection)
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.not_linked")


def test_a_login_refused_for_an_extra_sign_in_step_asks_for_an_app_password(
    owner_client, owner, firm, mailbox_user
):
    # The server refuses the right password with Microsoft's "MFA required" code.
    mailbox_user.server.refuse_logins(mailbox_user.name, "AADSTS50076")
    mailbox_sync(_mailbox(firm, mailbox_user, owner=owner.user))
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.two_factor")
    assert "AADSTS50076" in page  # the server's own reply, behind the technical details


def test_a_folder_with_mail_that_is_not_synced_is_reported(owner_client, owner, firm, mailbox_user):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Clients")
    for n in range(2):
        server.append(mailbox_user.name, _mail("anna@birch.test", f"Filed {n}"), folder="Clients")
    mailbox_sync(_mailbox(firm, mailbox_user, owner=owner.user))
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.labels_excluded")
    assert "Clients (2)" in page
    assert "Choose folders" in page


def test_a_folder_the_server_renumbers_at_every_visit_is_reported(
    owner_client, owner, firm, mailbox_user
):
    from mailsync.engine import MAX_RESETS

    server = mailbox_user.server
    server.append(mailbox_user.name, _mail("anna@birch.test", "Statement"))
    connection = _mailbox(firm, mailbox_user, owner=owner.user)
    mailbox_sync(connection)
    for n in range(MAX_RESETS + 1):
        server.set_uidvalidity(mailbox_user.name, "INBOX", 5000 + n)
        mailbox_sync(connection)
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.uidvalidity_unstable")
    assert "INBOX" in page


@pytest.fixture
def plain_dovecot(dovecot):
    """A second Dovecot without TLS (the session's one offers STARTTLS)."""
    import shutil
    import tempfile

    from tests.servers.dovecot import DovecotServer

    run_dir = tempfile.mkdtemp(prefix="portal-dovecot-plain-")
    server = DovecotServer(run_dir).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_a_server_without_starttls_is_a_missing_protocol(owner_client, owner, firm, plain_dovecot):
    plain_dovecot.add_user("plainuser", "plain-secret")
    connection = mailsync_services.connection_create(
        firm=firm,
        owner=owner.user,
        kind="imap",
        email_address="plainuser@firm.test",
        host=plain_dovecot.host,
        port=plain_dovecot.imap_port,
        security="starttls",
        username="plainuser",
        password="plain-secret",
    )
    mailbox_sync(connection)
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.protocol_unsupported")
    assert "STARTTLS" in page


def test_a_grant_without_the_mail_permission_shows_how_to_grant_it(
    owner_client, owner, firm, mailbox_user, oauth_token_endpoint
):
    from mailsync.models import MailboxFolder
    from tests.mailsync.test_oauth import _oauth_connection

    refresh = oauth_token_endpoint.issue(mailbox_user.name, scopes=("openid", "email"))
    connection = _oauth_connection(
        refresh_token=refresh,
        host=mailbox_user.server.host,
        port=mailbox_user.server.imap_port,
        security="none",
        username=mailbox_user.name,
        email_address=f"{mailbox_user.name}@gmail.test",
    )
    connection.firm = firm
    connection.owner = owner.user
    connection.save()
    MailboxFolder.objects.create(connection=connection, name="INBOX", enabled=True)
    mailbox_sync(connection)
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "sync.insufficient_scope")
    assert "https://mail.google.com/" in page


def test_sender_details_that_came_in_broken_are_reported(owner_client, firm):
    # An import wrote the reply-to address with a zero-width space no form would accept.
    firm.reply_to_email = "billing@alder.test\u200b"
    firm.save()
    page = unescape(owner_client.get(reverse("troubleshooting:dashboard")).content.decode())
    assert _shows(page, "domain.imported_settings_stale")
    assert "ZERO WIDTH SPACE" in page


# Where each detectable code is produced from a real signal. A new code in the catalogue
# fails this test until it has a producing test (or is marked guidance-only with a reason).
PRODUCED_BY = {
    "delivery.hard_bounce": "test_a_refusal_at_send_time_shows_on_the_client",
    "delivery.soft_bounce": "test_a_refusal_at_send_time_shows_on_the_client",
    "delivery.rejected_policy": "test_a_refusal_at_send_time_shows_on_the_client",
    "send.invalid_recipient_chars": "test_a_refusal_at_send_time_shows_on_the_client",
    "delivery.not_sent_rejected_document": "test_a_refusal_at_send_time_shows_on_the_client",
    "delivery.suppressed": "test_sending_again_to_a_hard_bounced_address_is_skipped_and_shown",
    "delivery.blocked_repeated_failures": "test_repeated_soft_bounces_block_the_address",
    "delivery.complaint": "test_an_esp_complaint_shows_on_the_client",
    "delivery.invalid_address": "test_an_esp_bounce_for_a_dead_domain_shows_an_invalid_address",
    "delivery.outcome_unknown": (
        "test_a_send_cut_short_by_a_dead_worker_shows_outcome_unknown_on_client_and_dashboard"
    ),
    "domain.spf_missing": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "domain.spf_invalid": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "domain.spf_too_many_lookups": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "domain.dkim_missing": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "domain.dmarc_missing": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "domain.dmarc_misaligned": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "domain.via_shown": "test_a_dns_answer_shows_the_domain_problem_on_the_dashboard",
    "sync.auth_failed": "test_a_refused_mailbox_login_shows_on_its_clients_naming_the_member",
    "sync.server_settings": "test_wrong_server_settings_show_on_the_dashboard",
    "sync.connection": "test_a_mailbox_that_cannot_be_reached_shows_as_delayed",
    "sync.not_linked": "test_synced_mail_that_reaches_no_client_is_reported",
    "domain.imported_settings_stale": "test_sender_details_that_came_in_broken_are_reported",
    "sync.two_factor": "test_a_login_refused_for_an_extra_sign_in_step_asks_for_an_app_password",
    "sync.insufficient_scope": "test_a_grant_without_the_mail_permission_shows_how_to_grant_it",
    "sync.protocol_unsupported": "test_a_server_without_starttls_is_a_missing_protocol",
    "sync.labels_excluded": "test_a_folder_with_mail_that_is_not_synced_is_reported",
    "sync.uidvalidity_unstable": "test_a_folder_the_server_renumbers_at_every_visit_is_reported",
    # Produced against Dovecot by removing stored rows, and shown on /problems/ and on the
    # member's Email Sync with the numbers: tests/mailsync/test_silent_gap.py.
    "sync.gap": "test_removed_rows_show_with_the_numbers_and_a_recheck_restores_them_once",
    # Produced at Test account by aiosmtpd refusing SMTP AUTH as Microsoft 365 does, and
    # shown on /problems/: tests/mailsync/test_smtp_step.py.
    "send.smtp_auth_disabled": (
        "test_a_mailbox_whose_tenant_refuses_smtp_can_be_saved_and_the_problem_is_recorded"
    ),
    # Produced by Postfix-style 553 refusals of MAIL FROM from aiosmtpd, shown with its guide
    # where the address is added: tests/mailsync/test_outgoing.py.
    "send.sender_refused": (
        "test_an_alias_the_server_refuses_cannot_be_added_and_its_reply_is_shown"
    ),
    # A Google-served recipient while the firm's domain does not align, from the loopback
    # DNS server: tests/troubleshooting/test_problem_actions.py.
    "delivery.flagged_dangerous": (
        "test_a_google_served_recipient_of_a_misaligned_domain_gets_the_warning_on_the_invoice"
    ),
}
# Detectable in principle, not yet produced end to end; each names what is missing.
NOT_YET = {}


def test_every_detectable_code_is_produced_by_a_test_or_says_what_is_missing():
    detectable = {g.code for g in GUIDES if g.detectable}
    guidance_only = {g.code for g in GUIDES if not g.detectable}
    assert detectable == set(PRODUCED_BY) | set(NOT_YET)
    assert not (set(PRODUCED_BY) & set(NOT_YET))
    assert guidance_only == {"delivery.spam_folder"}
    assert all(g.not_detectable_because for g in GUIDES if not g.detectable)


def test_the_dashboard_filters_mailbox_problems_by_member(
    owner_client, owner, staff, firm, mailbox_user
):
    mine = _mailbox(firm, mailbox_user, owner=owner.user)
    mailbox_user.server.set_password(mailbox_user.name, "changed-on-the-server")
    mailbox_sync(mine)
    url = reverse("troubleshooting:dashboard")
    assert _shows(
        unescape(owner_client.get(url, {"member": owner.user.pk}).content.decode()),
        "sync.auth_failed",
    )
    assert not _shows(
        unescape(owner_client.get(url, {"member": staff.user.pk}).content.decode()),
        "sync.auth_failed",
    )
