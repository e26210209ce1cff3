"""Test account, sync and sending never reach the portal's own network, and never show what
a foreign service answered.

Real components: a TCP service on loopback that greets like an SSH server (and counts the
connections it got), the loopback DNS server for names that resolve to private addresses,
Dovecot and aiosmtpd where a real mail server is needed.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailsync import crypto, sending
from mailsync.account_check import check_account
from mailsync.adapters import Credentials, ServerSettings
from mailsync.engine import mailbox_sync
from mailsync.errors import SERVER_SETTINGS, SyncError
from mailsync.models import MailboxConnection
from mailsync.netguard import connect, guard_from_settings
from tests.mailsync.factories import MailboxConnectionFactory
from tests.security.conftest import BANNER, BannerServer

CONNECT = reverse("mailsync:credentials")
REFUSAL = "is not a mail server on the public internet"


def _test_account(http, host: str, port: int, **extra) -> str:
    data = {
        "preset": "",
        "kind": "imap",
        "email_address": "ann@alder.test",
        "host": host,
        "port": port,
        "security": "none",
        "username": "ann",
        "password": "secret-pw",
        "smtp_host": "",
        "action": "test",
    }
    data.update(extra)
    return http.post(CONNECT, data).content.decode()


@pytest.fixture
def rebinding_dns(settings, dns_zone):
    """Names on the loopback DNS server that point at the portal's own network."""
    server = dns_zone(
        {
            "mail.rebind.test": [{"A": "127.0.0.1"}],
            "mixed.rebind.test": [{"A": "8.8.8.8"}, {"A": "127.0.0.1"}],
            "v6.rebind.test": [{"AAAA": "::ffff:127.0.0.1"}],
            "metadata.rebind.test": [{"A": "169.254.169.254"}],
        }
    )
    settings.DNS_NAMESERVERS = [server.host]
    settings.DNS_PORT = server.port
    server.clear_queries()
    return server


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1"])
def test_test_account_refuses_loopback_in_any_spelling_without_connecting(
    owner_client, banner_server: BannerServer, private_hosts_refused, host
):
    page = _test_account(owner_client, host, banner_server.port)

    assert REFUSAL in page
    assert banner_server.accepted == 0
    assert not MailboxConnection.objects.exists()


@pytest.mark.parametrize(
    "host", ["mail.rebind.test", "mixed.rebind.test", "v6.rebind.test", "metadata.rebind.test"]
)
def test_test_account_refuses_a_name_that_resolves_to_a_private_address(
    owner_client, banner_server, private_hosts_refused, rebinding_dns, host
):
    page = _test_account(owner_client, host, banner_server.port)

    assert REFUSAL in page
    assert banner_server.accepted == 0


def test_a_foreign_services_banner_is_never_shown(owner_client, banner_server):
    # Private hosts allowed (an on-premises installation): the connection is made, but what
    # answered is not an IMAP server, and its words stay out of the page.
    page = _test_account(owner_client, "127.0.0.1", banner_server.port)

    assert banner_server.accepted == 1
    assert "OpenSSH" not in page and "secret-banner" not in page
    assert "not answer as the mail server expected" in page or "not as an IMAP" in page


def test_a_foreign_services_banner_is_not_shown_for_the_sending_server_either(
    owner_client, banner_server, mailbox_user
):
    page = _test_account(
        owner_client,
        "127.0.0.1",
        mailbox_user.server.imap_port,
        username=mailbox_user.name,
        password=mailbox_user.password,
        smtp_host="127.0.0.1",
        smtp_port=banner_server.port,
        smtp_security="none",
    )

    assert banner_server.accepted == 1
    assert "OpenSSH" not in page and "secret-banner" not in page
    assert "not as an SMTP server" in page


def test_sync_of_a_saved_mailbox_on_a_private_host_is_refused(
    firm, owner, banner_server, private_hosts_refused, fernet_key
):
    connection = MailboxConnectionFactory(
        firm=firm, owner=owner.user, host="127.0.0.1", port=banner_server.port
    )

    mailbox_sync(connection)

    connection.refresh_from_db()
    assert connection.problem_code == SERVER_SETTINGS
    assert REFUSAL in connection.problem_detail
    assert banner_server.accepted == 0


def test_the_shared_mailboxs_sending_server_is_refused_on_a_private_host(
    firm, owner, banner_server, private_hosts_refused, fernet_key
):
    shared = MailboxConnectionFactory(
        firm=firm, owner=None, host="imap.alder.test", secret=crypto.encrypt("pw")
    )

    with pytest.raises(SyncError) as refused:
        sending.server_check(
            connection=shared,
            host="0x7f000001",
            port=banner_server.port,
            security="none",
            password="pw",
        )

    assert refused.value.code == SERVER_SETTINGS and REFUSAL in refused.value.detail
    assert banner_server.accepted == 0


def test_the_sending_server_page_shows_the_refusal(
    owner_client, firm, banner_server, private_hosts_refused, fernet_key
):
    shared = MailboxConnectionFactory(
        firm=firm, owner=None, host="imap.alder.test", secret=crypto.encrypt("pw")
    )

    response = owner_client.post(
        reverse("mailsync:shared_sending_addresses"),
        {
            "connection": shared.pk,
            "action": "server",
            "host": "127.1",
            "port": banner_server.port,
            "security": "none",
            "password": "pw",
        },
    )

    assert REFUSAL in response.content.decode()
    assert banner_server.accepted == 0


def test_a_name_is_looked_up_once_and_the_checked_address_is_connected_to(
    settings, rebinding_dns, banner_server
):
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = True

    with connect("mail.rebind.test", banner_server.port, 2, guard_from_settings()) as sock:
        assert sock.getpeername()[0] == "127.0.0.1"
        assert sock.recv(100).startswith(BANNER[:7])

    a_queries = [q for q in rebinding_dns.queries if q[1] == "A"]
    assert len(a_queries) == 1


def test_tls_still_checks_the_certificate_against_the_typed_name(settings, dns_zone, mailbox_user):
    # Dovecot's certificate names localhost and 127.0.0.1. Reached through another name
    # that resolves to 127.0.0.1, the connection goes to the checked address, but the
    # certificate must still match the name the member typed: refused.
    server = dns_zone({"mail.rebind.test": [{"A": "127.0.0.1"}]})
    settings.DNS_NAMESERVERS = [server.host]
    settings.DNS_PORT = server.port
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = True
    credentials = Credentials(password=mailbox_user.password)

    def check(host: str):
        return check_account(
            ServerSettings(
                host,
                mailbox_user.server.imaps_port,
                "ssl",
                mailbox_user.name,
                timeout=5,
                ca_file=mailbox_user.server.ca_file,
                guard=guard_from_settings(),
            ),
            credentials,
        )

    renamed = check("mail.rebind.test")
    assert (renamed.error.code, renamed.error.step) == (SERVER_SETTINGS, "tls")
    assert "mail.rebind.test" in renamed.error.detail or "certificate" in renamed.error.detail
    assert check("127.0.0.1").ok
