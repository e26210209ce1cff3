"""Focused tests for the SPF, DMARC and DKIM record helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.servers.dns_fixtures import make_resolver
from tests.servers.dns_server import SERVFAIL, LoopbackDNSServer, Zone
from troubleshooting.dnsrecords import parse_dkim, parse_dmarc
from troubleshooting.spf import check_host, count_spf_lookups, spf_record_merge

ServeZone = Callable[[Zone], LoopbackDNSServer]

# --------------------------------------------------------------------- spf_record_merge ---


def test_it_inserts_the_include_before_a_hard_fail_all() -> None:
    merged = spf_record_merge("v=spf1 mx ip4:192.0.2.0/24 -all", "mail.portal.example")

    assert merged == "v=spf1 mx ip4:192.0.2.0/24 include:mail.portal.example -all"


def test_it_inserts_the_include_before_a_soft_fail_all() -> None:
    merged = spf_record_merge("v=spf1 include:_spf.google.com ~all", "mail.portal.example")

    assert merged == "v=spf1 include:_spf.google.com include:mail.portal.example ~all"


def test_it_inserts_the_include_before_a_redirect() -> None:
    merged = spf_record_merge("v=spf1 a redirect=_spf.firm.example", "mail.portal.example")

    assert merged == "v=spf1 a include:mail.portal.example redirect=_spf.firm.example"


def test_it_creates_a_soft_fail_record_when_there_is_none() -> None:
    assert spf_record_merge(None, "mail.portal.example") == (
        "v=spf1 include:mail.portal.example ~all"
    )


def test_it_leaves_a_record_that_already_has_the_include_alone() -> None:
    record = "v=spf1 +include:Mail.Portal.Example -all"

    assert spf_record_merge(record, "mail.portal.example") == record


def test_it_refuses_to_merge_into_a_record_that_is_not_spf() -> None:
    with pytest.raises(ValueError, match="not an SPF record"):
        spf_record_merge("v=DMARC1; p=none", "mail.portal.example")


_TERMS = st.sampled_from(
    ["mx", "a", "ip4:192.0.2.0/24", "include:_spf.isp.example", "ptr", "exists:%{i}.x.example"]
)


@given(terms=st.lists(_TERMS, max_size=6), qualifier=st.sampled_from(["-", "~", "?", "+", ""]))
def test_it_keeps_one_record_ending_in_the_same_all_term(terms: list[str], qualifier: str) -> None:
    existing = " ".join(["v=spf1", *terms, f"{qualifier}all"])

    merged = spf_record_merge(existing, "mail.portal.example")

    assert merged.lower().count("v=spf1") == 1
    assert merged.split()[-2:] == ["include:mail.portal.example", f"{qualifier}all"]


# -------------------------------------------------------------------- count_spf_lookups ---

# mx, include and redirect at the top (3), five terms in the include (8), then a, mx and an
# include behind the redirect (11) whose record holds one more a: 12 in all.
OVER_THE_LIMIT = {
    "firm.example": [{"TXT": "v=spf1 mx include:_a.firm.example redirect=_b.firm.example"}],
    "_a.firm.example": [{"TXT": "v=spf1 a a:x.firm.example exists:%{i}.bl.example ptr mx ~all"}],
    "_b.firm.example": [{"TXT": "v=spf1 a mx include:_c.firm.example -all"}],
    "_c.firm.example": [{"TXT": "v=spf1 ip4:192.0.2.0/24 a -all"}],
}


def test_it_counts_lookups_through_includes_and_redirects(dns_zone: ServeZone) -> None:
    server = dns_zone(OVER_THE_LIMIT)

    assert count_spf_lookups("firm.example", make_resolver(server)) == 12


def test_it_ignores_a_redirect_when_the_record_has_an_all_term(dns_zone: ServeZone) -> None:
    server = dns_zone(
        {
            "firm.example": [{"TXT": "v=spf1 mx redirect=_b.firm.example ~all"}],
            "_b.firm.example": [{"TXT": "v=spf1 a a a -all"}],
        }
    )

    assert count_spf_lookups("firm.example", make_resolver(server)) == 1


def test_it_counts_an_include_loop_as_far_over_the_limit(dns_zone: ServeZone) -> None:
    server = dns_zone(
        {
            "a.example": [{"TXT": "v=spf1 include:b.example -all"}],
            "b.example": [{"TXT": "v=spf1 include:a.example -all"}],
        }
    )

    assert count_spf_lookups("a.example", make_resolver(server), stop_after=50) == 51


def test_it_gives_permerror_when_evaluation_needs_more_than_ten_lookups(
    dns_zone: ServeZone,
) -> None:
    server = dns_zone(OVER_THE_LIMIT)

    result = check_host(
        "198.51.100.7",
        "firm.example",
        "bookkeeper@firm.example",
        resolver=make_resolver(server),
        max_void_lookups=20,
    )

    assert result.result == "permerror"
    assert result.lookups == 11
    assert "more than 10" in result.problem


# ---------------------------------------------------------------------------- check_host ---


def test_it_records_what_dns_said(dns_zone: ServeZone) -> None:
    server = dns_zone({"firm.example": [{"TXT": "v=spf1 ip4:192.0.2.1 -all"}, {"TXT": "hello"}]})

    result = check_host(
        "192.0.2.1", "firm.example", "a@firm.example", resolver=make_resolver(server)
    )

    assert result.result == "pass"
    assert result.record == "v=spf1 ip4:192.0.2.1 -all"
    assert [(a.name, a.rtype) for a in result.answers] == [("firm.example", "TXT")]
    assert '"v=spf1 ip4:192.0.2.1 -all"' in result.answers[0].text


def test_it_gives_temperror_when_the_dns_server_fails(dns_zone: ServeZone) -> None:
    server = dns_zone(
        {
            "firm.example": [{"TXT": "v=spf1 a:broken.firm.example -all"}],
            "broken.firm.example": [SERVFAIL],
        }
    )

    result = check_host(
        "192.0.2.1", "firm.example", "a@firm.example", resolver=make_resolver(server)
    )

    assert result.result == "temperror"


# --------------------------------------------------------------------------- parse_dmarc ---


def test_it_parses_every_dmarc_policy_tag() -> None:
    policy = parse_dmarc(
        "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=s; pct=50; "
        "rua=mailto:dmarc@firm.example, mailto:agg@reports.example"
    )

    assert policy == {
        "v": "DMARC1",
        "p": "reject",
        "sp": "quarantine",
        "adkim": "s",
        "aspf": "s",
        "pct": 50,
        "rua": ["mailto:dmarc@firm.example", "mailto:agg@reports.example"],
    }


def test_it_fills_in_the_dmarc_defaults() -> None:
    policy = parse_dmarc("v=DMARC1;p=quarantine")

    assert (policy["sp"], policy["adkim"], policy["aspf"], policy["pct"], policy["rua"]) == (
        "quarantine",
        "r",
        "r",
        100,
        [],
    )


def test_it_reads_a_dmarc_record_with_reports_but_no_policy_as_p_none() -> None:
    assert parse_dmarc("v=DMARC1; rua=mailto:d@firm.example")["p"] == "none"


def test_it_rejects_a_dmarc_record_without_the_version_first() -> None:
    with pytest.raises(ValueError, match="v=DMARC1"):
        parse_dmarc("p=reject; v=DMARC1")


def test_it_rejects_an_unknown_dmarc_policy() -> None:
    with pytest.raises(ValueError, match="p= must be"):
        parse_dmarc("v=DMARC1; p=block")


# ---------------------------------------------------------------------------- parse_dkim ---


def test_it_parses_a_dkim_key_record() -> None:
    key = parse_dkim("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")

    assert (key["v"], key["k"], key["p"], key["revoked"]) == (
        "DKIM1",
        "ed25519",
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        False,
    )


def test_it_reports_an_empty_dkim_key_as_revoked() -> None:
    assert parse_dkim("v=DKIM1; k=rsa; p=")["revoked"] is True


def test_it_joins_a_dkim_key_folded_over_whitespace_and_defaults_to_rsa() -> None:
    key = parse_dkim("p=MIGfMA0GCSqGSIb3 DQEBAQUAA4GN\tADCBiQKBgQ==")

    assert (key["k"], key["p"]) == ("rsa", "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ==")


def test_it_rejects_a_dkim_record_without_a_key() -> None:
    with pytest.raises(ValueError, match="no p="):
        parse_dkim("v=DKIM1; k=rsa")
