"""Sending-domain checks against DNS answers from the loopback server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command

from tests.servers.dns_fixtures import make_resolver
from tests.troubleshooting.dkim_keys import ed25519_record, rsa_record
from troubleshooting.domain_checks import (
    SendingService,
    check_dkim,
    check_dmarc,
    check_mx,
    check_sending_domain,
    check_spf,
)

SERVICE = SendingService(
    spf_include="_spf.portal.test",
    sending_ips=("192.0.2.25",),
    dkim=(("pp1", "pp1.dkim.portal.test"),),
)
PORTAL_ZONE = {"_spf.portal.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}]}


@pytest.fixture
def resolver(dns_server):
    return make_resolver(dns_server, timeout=1.0)


def _zone(dns_zone, extra):
    return dns_zone({**PORTAL_ZONE, **extra})


def test_a_domain_without_spf_gets_the_record_to_publish(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"MX": [10, "mx.firm.test"]}]})
    result = check_spf("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.spf_missing"
    assert result.publish.value == "v=spf1 include:_spf.portal.test ~all"


def test_an_existing_spf_record_is_merged_never_doubled(dns_zone, resolver):
    _zone(
        dns_zone,
        {
            "firm.test": [{"TXT": "v=spf1 include:_spf.google.test -all"}],
            "_spf.google.test": [{"TXT": "v=spf1 ip4:198.51.100.0/24 -all"}],
        },
    )
    result = check_spf("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.spf_invalid"
    assert result.publish.value == ("v=spf1 include:_spf.google.test include:_spf.portal.test -all")
    assert ("firm.test", "TXT", "v=spf1 include:_spf.google.test -all") in result.answers


def test_two_spf_records_are_an_error(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"TXT": "v=spf1 -all"}, {"TXT": "v=spf1 mx -all"}]})
    assert check_spf("firm.test", SERVICE, resolver).problem_code == "domain.spf_invalid"


def test_an_spf_record_over_ten_lookups_is_reported(dns_zone, resolver):
    includes = " ".join(f"include:s{n}.firm.test" for n in range(11))
    zone = {"firm.test": [{"TXT": f"v=spf1 {includes} include:_spf.portal.test -all"}]}
    zone.update({f"s{n}.firm.test": [{"TXT": "v=spf1 -all"}] for n in range(11)})
    _zone(dns_zone, zone)
    assert check_spf("firm.test", SERVICE, resolver).problem_code == "domain.spf_too_many_lookups"


def test_spf_that_authorises_the_portal_passes(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"TXT": "v=spf1 include:_spf.portal.test -all"}]})
    assert check_spf("firm.test", SERVICE, resolver).ok


def test_a_missing_dkim_selector_gets_its_cname(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"A": "192.0.2.1"}]})
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.dkim_missing"
    assert (result.publish.name, result.publish.type, result.publish.value) == (
        "pp1._domainkey.firm.test",
        "CNAME",
        "pp1.dkim.portal.test",
    )


def test_a_published_dkim_cname_passes(dns_zone, resolver):
    _zone(
        dns_zone,
        {
            "pp1._domainkey.firm.test": [{"CNAME": "pp1.dkim.portal.test"}],
            "pp1.dkim.portal.test": [{"TXT": rsa_record()}],
        },
    )
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.ok


def test_no_dmarc_gets_a_safe_starting_policy(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"A": "192.0.2.1"}]})
    result = check_dmarc("firm.test", True, resolver)
    assert result.problem_code == "domain.dmarc_missing"
    assert result.publish.value.startswith("v=DMARC1; p=none")


def test_a_strict_dmarc_policy_without_alignment_is_reported(dns_zone, resolver):
    _zone(dns_zone, {"_dmarc.firm.test": [{"TXT": "v=DMARC1; p=reject"}]})
    assert check_dmarc("firm.test", False, resolver).problem_code == "domain.dmarc_misaligned"


def test_a_domain_that_authorises_nothing_shows_via(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"A": "192.0.2.1"}]})
    codes = {r.problem_code for r in check_sending_domain("firm.test", SERVICE, resolver)}
    assert "domain.via_shown" in codes


@pytest.mark.parametrize(
    ("zone", "ok"),
    [
        ({"client.test": [{"MX": [10, "mx.client.test"]}]}, True),
        ({"client.test": [{"MX": [0, "."]}]}, False),
        ({}, False),
    ],
)
def test_mx_tells_whether_a_client_domain_takes_mail(dns_zone, resolver, zone, ok):
    dns_zone(zone)
    assert check_mx("client.test", resolver).ok is ok


def test_a_dns_timeout_is_not_reported_as_a_problem(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": ["TIMEOUT"]})
    result = check_spf("firm.test", SERVICE, resolver)
    assert (result.ok, result.problem_code) == (False, "")


def test_the_command_prints_checks_answers_and_records(dns_server, dns_zone, settings, capsys):
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.PORTAL_SPF_INCLUDE = "_spf.portal.test"
    settings.PORTAL_DKIM_SELECTORS = [("pp1", "pp1.dkim.portal.test")]
    _zone(
        dns_zone,
        {
            "firm.test": [{"TXT": "v=spf1 mx -all"}, {"MX": [10, "mx.firm.test"]}],
            "mx.firm.test": [{"A": "192.0.2.9"}],
        },
    )
    call_command("check_domain", "firm.test", "--ip", "192.0.2.9")
    out = capsys.readouterr().out
    assert "FAIL spf" in out
    assert 'publish: firm.test TXT "v=spf1 mx include:_spf.portal.test -all"' in out
    assert "dns: firm.test TXT v=spf1 mx -all" in out
    assert "spf for 192.0.2.9: pass" in out
    assert "publish: pp1._domainkey.firm.test CNAME" in out


@pytest.fixture
def checked_firm(firm, dns_server, dns_zone, settings):
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    firm.sending_domain = "firm.test"
    firm.save()
    dns_zone({"firm.test": [{"TXT": "v=spf1 mx -all"}, {"MX": [10, "mx.firm.test"]}]})
    return firm


def test_a_check_is_trusted_for_its_answers_ttl_but_at_least_five_minutes(checked_firm):
    from troubleshooting.services import domain_checks_run

    run = domain_checks_run(firm=checked_firm)
    # The loopback server answers with a 60 s TTL: re-checking that often would be noise.
    assert run.expires_at - run.created == pytest.approx(
        timedelta(minutes=5), abs=timedelta(seconds=2)
    )


def test_only_firms_whose_check_expired_are_checked_again(checked_firm):
    from troubleshooting.services import domain_checks_run, firms_due_for_domain_check

    assert firms_due_for_domain_check() == [checked_firm.pk]
    run = domain_checks_run(firm=checked_firm)
    assert firms_due_for_domain_check() == []
    assert firms_due_for_domain_check(now=run.expires_at) == [checked_firm.pk]


def test_a_changed_sending_domain_is_checked_at_once(checked_firm):
    from troubleshooting.services import domain_checks_run, firms_due_for_domain_check

    domain_checks_run(firm=checked_firm)
    checked_firm.sending_domain = "other.test"
    checked_firm.save()
    assert firms_due_for_domain_check() == [checked_firm.pk]


def test_contact_addresses_on_a_dead_domain_show_before_anything_bounces(
    owner_client, firm, dns_server, dns_zone, settings
):
    from html import unescape

    from django.urls import reverse

    from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
    from troubleshooting.services import address_domains_check

    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    contact = ContactFactory(client=client)
    ContactAddressFactory(contact=contact, address="anna@birch-typo.test")
    ContactAddressFactory(contact=contact, address="ola@birch.test", is_primary=False)
    dns_zone({"birch.test": [{"MX": [10, "mx.birch.test"]}], "mx.birch.test": [{"A": "192.0.2.7"}]})
    assert address_domains_check(firm=firm) == 2
    page = unescape(
        owner_client.get(
            reverse("troubleshooting:client_problems", args=[client.pk])
        ).content.decode()
    )
    assert "The address cannot receive email" in page
    assert "anna@birch-typo.test" in page
    assert "ola@birch.test" not in page.split("The address cannot receive email", 1)[1]


def test_a_dns_timeout_does_not_mark_a_domain_dead(firm, dns_server, dns_zone, settings):
    from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
    from troubleshooting.models import AddressDomainCheck
    from troubleshooting.services import address_domains_check

    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.DNS_TIMEOUT = 0.5
    contact = ContactFactory(client=ClientFactory(firm=firm))
    ContactAddressFactory(contact=contact, address="anna@slow.test")
    dns_zone({"slow.test": ["TIMEOUT"]})
    assert address_domains_check(firm=firm) == 0
    assert not AddressDomainCheck.objects.exists()


def authenticated_zone(firm, *, ownership: bool = True) -> dict:
    """firm.test authorising the portal (SPF include, DKIM CNAME, DMARC) and, unless told
    otherwise, publishing ``firm``'s ownership record."""
    apex = [{"TXT": "v=spf1 include:_spf.portal.test -all"}, {"MX": [10, "mx.firm.test"]}]
    if ownership:
        apex.append({"TXT": firm.domain_ownership_record()})
    return {
        **PORTAL_ZONE,
        "firm.test": apex,
        "pp1._domainkey.firm.test": [{"CNAME": "pp1.dkim.portal.test"}],
        "pp1.dkim.portal.test": [{"TXT": rsa_record()}],
        "_dmarc.firm.test": [{"TXT": "v=DMARC1; p=quarantine"}],
    }


@pytest.fixture
def portal_service(settings, dns_server):
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.PORTAL_SPF_INCLUDE = "_spf.portal.test"
    settings.PORTAL_DKIM_SELECTORS = [("pp1", "pp1.dkim.portal.test")]


def test_a_domain_passing_spf_and_dkim_becomes_the_firms_verified_sender(
    firm, portal_service, dns_zone
):
    from troubleshooting.services import domain_checks_run

    firm.sending_domain, firm.reply_to_email = "firm.test", "office@firm.test"
    firm.save()
    dns_zone(authenticated_zone(firm))
    domain_checks_run(firm=firm)
    firm.refresh_from_db()
    assert firm.own_sender_address() == "office@firm.test"


def test_a_domain_without_dkim_keeps_the_platform_sender(firm, portal_service, dns_zone):
    from troubleshooting.services import domain_checks_run

    firm.sending_domain = "firm.test"
    firm.save()
    zone = {k: v for k, v in authenticated_zone(firm).items() if "_domainkey" not in k}
    dns_zone(zone)
    domain_checks_run(firm=firm)
    firm.refresh_from_db()
    assert firm.own_sender_address() is None


def test_a_later_failing_check_withdraws_the_firms_sender(firm, portal_service, dns_zone):
    from troubleshooting.services import domain_checks_run

    firm.sending_domain = "firm.test"
    firm.save()
    dns_zone(authenticated_zone(firm))
    domain_checks_run(firm=firm)
    dns_zone({**authenticated_zone(firm), "firm.test": [{"TXT": "v=spf1 mx -all"}]})
    domain_checks_run(firm=firm)
    firm.refresh_from_db()
    assert firm.own_sender_address() is None


def test_changing_the_sending_domain_falls_back_to_the_platform_sender(
    firm, portal_service, dns_zone
):
    from troubleshooting.services import domain_checks_run

    firm.sending_domain = "firm.test"
    firm.save()
    dns_zone(authenticated_zone(firm))
    domain_checks_run(firm=firm)
    firm.refresh_from_db()
    assert firm.own_sender_address() == "invoices@firm.test"
    firm.sending_domain = "other.test"
    firm.save()
    assert firm.own_sender_address() is None


def test_another_firm_cannot_send_from_a_domain_it_has_not_proven_its_own(
    firm, portal_service, dns_zone
):
    from tests.factories import FirmFactory
    from troubleshooting.services import domain_checks_run

    firm.sending_domain = "firm.test"
    firm.save()
    dns_zone(authenticated_zone(firm))  # the real owner's records, SPF and DKIM included
    domain_checks_run(firm=firm)
    intruder = FirmFactory(sending_domain="firm.test", reply_to_email="ceo@firm.test")
    domain_checks_run(firm=intruder)
    intruder.refresh_from_db()
    firm.refresh_from_db()
    assert intruder.own_sender_address() is None
    assert firm.own_sender_address() == "invoices@firm.test"


def test_a_domain_without_the_firms_ownership_record_keeps_the_platform_sender(
    firm, portal_service, dns_zone
):
    from troubleshooting.services import domain_checks_run

    firm.sending_domain = "firm.test"
    firm.save()
    dns_zone(authenticated_zone(firm, ownership=False))
    run = domain_checks_run(firm=firm)
    firm.refresh_from_db()
    assert firm.own_sender_address() is None
    (ownership,) = [r for r in run.results if r["name"] == "ownership"]
    assert ownership["publish"]["value"] == (
        "practice-portal-verification=" + firm.domain_ownership_token()
    )


# --- DKIM keys, fetched through the selector's CNAME ---


def _dkim_zone(dns_zone, key_record):
    _zone(
        dns_zone,
        {
            "pp1._domainkey.firm.test": [{"CNAME": "pp1.dkim.portal.test"}],
            "pp1.dkim.portal.test": [{"TXT": key_record}],
        },
    )


def test_a_dkim_key_behind_the_cname_is_checked_and_named_with_its_size(dns_zone, resolver):
    _dkim_zone(dns_zone, rsa_record(2048))
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.ok
    assert result.facts["type"] == "rsa" and result.facts["bits"] == 2048
    assert result.summary == "DKIM key published: RSA, 2048 bits."


def test_an_ed25519_dkim_key_passes_and_says_so(dns_zone, resolver):
    _dkim_zone(dns_zone, ed25519_record())
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.ok
    assert result.summary == "DKIM key published: Ed25519."


def test_a_revoked_dkim_key_is_not_a_key(dns_zone, resolver):
    _dkim_zone(dns_zone, "v=DKIM1; k=rsa; p=")
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.dkim_missing"
    assert result.facts["state"] == "revoked"
    assert "revoked" in result.summary


def test_an_rsa_key_under_1024_bits_is_too_short(dns_zone, resolver):
    _dkim_zone(dns_zone, rsa_record(512))
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.dkim_missing"
    assert (result.facts["state"], result.facts["bits"]) == ("too_short", 512)


@pytest.mark.parametrize(
    "record",
    ["v=DKIM1; k=rsa; p=MIIBIjAN", "v=DKIM1; k=rsa; p=not base64!", "v=DKIM1; k=rsa"],
)
def test_a_dkim_key_that_does_not_parse_is_reported(dns_zone, resolver, record):
    _dkim_zone(dns_zone, record)
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.dkim_missing"
    assert result.facts["state"] == "unreadable"


def test_a_right_cname_to_no_key_says_the_key_is_the_portals_to_fix(dns_zone, resolver):
    _zone(dns_zone, {"pp1._domainkey.firm.test": [{"CNAME": "pp1.dkim.portal.test"}]})
    (result,) = check_dkim("firm.test", SERVICE, resolver)
    assert result.problem_code == "domain.dkim_missing"
    assert result.publish is None  # nothing for the firm to publish: its CNAME is right
    assert "the portal's" in result.summary


# --- DMARC alignment (RFC 7489) ---


def _alignment(results):
    return next(r for r in results if r.name == "alignment")


def test_spf_passing_alone_does_not_align_when_the_return_path_is_the_portals(dns_zone, resolver):
    _zone(
        dns_zone,
        {
            "firm.test": [{"TXT": "v=spf1 include:_spf.portal.test -all"}],
            "_dmarc.firm.test": [{"TXT": "v=DMARC1; p=reject"}],
        },
    )
    service = SendingService(**{**SERVICE.__dict__, "return_path_domain": "bounce.portal.test"})
    results = check_sending_domain("firm.test", service, resolver)
    alignment = _alignment(results)
    assert not alignment.ok and alignment.problem_code == "domain.via_shown"
    assert alignment.facts["spf_passes"] and not alignment.facts["spf"]
    assert "domain.dmarc_misaligned" in {r.problem_code for r in results}


def test_dkim_aligns_with_a_valid_key_and_says_spf_does_not(dns_zone, resolver):
    _dkim_zone(dns_zone, rsa_record())
    service = SendingService(**{**SERVICE.__dict__, "return_path_domain": "bounce.portal.test"})
    alignment = _alignment(check_sending_domain("firm.test", service, resolver))
    assert alignment.ok
    assert alignment.facts["dkim"] and not alignment.facts["spf"]
    assert "Return-Path is on bounce.portal.test" in alignment.summary


def test_spf_aligns_when_the_return_path_is_the_firms_own_address(dns_zone, resolver):
    _zone(dns_zone, {"firm.test": [{"TXT": "v=spf1 include:_spf.portal.test -all"}]})
    service = SendingService(**{**SERVICE.__dict__, "return_path_domain": None})
    alignment = _alignment(check_sending_domain("firm.test", service, resolver))
    assert alignment.ok and alignment.facts["spf"] and not alignment.facts["dkim"]


@pytest.mark.parametrize(("aspf", "aligned"), [("r", True), ("s", False)])
def test_relaxed_spf_alignment_accepts_a_return_path_under_the_organisational_domain(
    dns_zone, resolver, aspf, aligned
):
    # The Public Suffix List knows co.uk: firm.co.uk is the organisational domain.
    _zone(
        dns_zone,
        {
            "firm.co.uk": [{"TXT": "v=spf1 include:_spf.portal.test -all"}],
            "_dmarc.firm.co.uk": [{"TXT": f"v=DMARC1; p=none; aspf={aspf}"}],
        },
    )
    service = SendingService(**{**SERVICE.__dict__, "return_path_domain": "bounces.firm.co.uk"})
    alignment = _alignment(check_sending_domain("firm.co.uk", service, resolver))
    assert alignment.facts["organisational_domain"] == "firm.co.uk"
    assert alignment.facts["spf"] is aligned


def test_a_subdomain_without_dmarc_is_governed_by_its_organisational_domains_sp(dns_zone, resolver):
    _zone(dns_zone, {"_dmarc.firm.co.uk": [{"TXT": "v=DMARC1; p=none; sp=reject"}]})
    result = check_dmarc("mail.firm.co.uk", False, resolver)
    assert result.problem_code == "domain.dmarc_misaligned"
    assert result.facts["found_at"] == "_dmarc.firm.co.uk"
    assert result.publish.value == "v=DMARC1; p=none; sp=none"


@pytest.mark.parametrize(
    ("bounce_address", "backend", "expected"),
    [
        (
            "bounces@bounce.portal.test",
            "django.core.mail.backends.smtp.EmailBackend",
            "bounce.portal.test",
        ),
        ("", "django.core.mail.backends.smtp.EmailBackend", None),  # the From address itself
        ("", "anymail.backends.postmark.EmailBackend", ""),  # the ESP's own
    ],
)
def test_the_return_path_spf_is_judged_on_follows_how_the_portal_sends(
    settings, bounce_address, backend, expected
):
    from troubleshooting.services import sending_service

    settings.BOUNCE_ADDRESS = bounce_address
    settings.EMAIL_BACKEND = backend
    assert sending_service().return_path_domain == expected
