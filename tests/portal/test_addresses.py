"""Email address splitting and validation: what an accountant pastes, what they are told."""

from __future__ import annotations

import pytest
from django.utils import translation
from hypothesis import given
from hypothesis import strategies as st

from portal.addresses import (
    FORBIDDEN_CHARACTERS,
    AddressError,
    split_addresses,
    suggest_domain,
    validate_address,
)


def test_it_splits_on_semicolons_commas_and_new_lines():
    text = "a@x.com; b@y.com,c@z.org\nd@w.net\r\ne@v.io"
    assert split_addresses(text) == ["a@x.com", "b@y.com", "c@z.org", "d@w.net", "e@v.io"]


def test_it_drops_empty_items_and_surrounding_whitespace():
    assert split_addresses(" ;; a@x.com ;\n\n ,b@y.com ; ") == ["a@x.com", "b@y.com"]


def test_it_strips_invisible_characters_at_the_ends():
    assert split_addresses("\u200ba@x.com\ufeff") == ["a@x.com"]


@pytest.mark.parametrize("char", list(FORBIDDEN_CHARACTERS))
def test_it_names_a_forbidden_character_and_its_position(char):
    with pytest.raises(AddressError) as exc:
        validate_address(f"an{char}na@example.com")
    assert exc.value.code == "forbidden_character"
    assert char in exc.value.message
    assert "position 3" in exc.value.message


def test_it_reports_an_inner_space_with_its_position():
    with pytest.raises(AddressError) as exc:
        validate_address("anna berg@example.com")
    assert exc.value.code == "space"
    assert "position 5" in exc.value.message


@pytest.mark.parametrize(
    ("char", "label"),
    [("\u200b", "ZERO WIDTH SPACE"), ("\u00a0", "NO-BREAK SPACE"), ("\u2060", "WORD JOINER")],
)
def test_it_reports_an_invisible_character_by_name(char, label):
    with pytest.raises(AddressError) as exc:
        validate_address(f"anna{char}@example.com")
    assert exc.value.code == "invisible_character"
    assert label in exc.value.message
    assert "position 5" in exc.value.message


def test_it_strips_leading_and_trailing_whitespace():
    assert validate_address("  anna@example.com \t").address == "anna@example.com"


def test_it_lower_cases_the_domain_but_keeps_the_local_part_as_typed():
    valid = validate_address("Anna.Berg@Example.COM")
    assert valid.address == "Anna.Berg@example.com"
    assert valid.normalized == "anna.berg@example.com"


def test_it_normalises_an_international_domain_to_idna_for_matching():
    valid = validate_address("kari@Bücher.example")
    assert valid.address == "kari@bücher.example"
    assert valid.normalized == "kari@xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("gmial.com", "gmail.com"),
        ("hotmial.com", "hotmail.com"),
        ("outlok.com", "outlook.com"),
        ("yahooo.com", "yahoo.com"),
        ("gmail.con", "gmail.com"),
    ],
)
def test_it_suggests_the_intended_provider_for_a_common_typo(typed, suggested):
    assert validate_address(f"anna@{typed}").suggestion == f"anna@{suggested}"


def test_it_does_not_suggest_anything_for_a_correct_or_unrelated_domain():
    assert validate_address("anna@gmail.com").suggestion is None
    assert suggest_domain("alder-birch.fi") is None


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("annaexample.com", "missing_at"),
        ("a@b@example.com", "several_at"),
        ("@example.com", "empty_local"),
        ("anna@example", "incomplete_domain"),
        ("", "empty"),
        ("anna..berg@example.com", "invalid"),
    ],
)
def test_it_explains_a_malformed_address(typed, code):
    with pytest.raises(AddressError) as exc:
        validate_address(typed)
    assert exc.value.code == code


def test_it_explains_the_error_in_the_users_language():
    with translation.override("es"), pytest.raises(AddressError) as exc:
        validate_address("anna berg@example.com")
    assert "espacio" in exc.value.message


# Properties: the splitter never loses or invents an address, the validator never fails
# with anything but AddressError, and every forbidden character is found where it is.

_local = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)
_domain = st.from_regex(r"[a-z0-9]{1,10}\.(com|org|fi|no|pl|ro|es)", fullmatch=True)
_addresses = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)
_separators = st.sampled_from([";", ",", "\n", "; ", " ,\n", "\r\n", " ; "])


@given(st.lists(_addresses, min_size=1, max_size=8), st.data())
def test_property_split_returns_every_address_in_order(addresses, data):
    text = addresses[0]
    for address in addresses[1:]:
        text += data.draw(_separators) + address
    padded = data.draw(st.sampled_from(["", " ", "\n", "\u200b"])) + text
    assert split_addresses(padded) == addresses


@given(_addresses)
def test_property_a_well_formed_address_validates_to_itself(address):
    valid = validate_address(address)
    assert valid.address == address
    assert valid.normalized == address.lower()


@given(st.text(max_size=60))
def test_property_validation_only_ever_raises_address_error(text):
    try:
        validate_address(text)
    except AddressError as exc:
        assert exc.message


@given(_local, _domain, st.sampled_from(list(FORBIDDEN_CHARACTERS)), st.data())
def test_property_a_forbidden_character_is_reported_at_its_position(local, domain, char, data):
    at = data.draw(st.integers(min_value=0, max_value=len(local)))
    address = local[:at] + char + local[at:] + "@" + domain
    with pytest.raises(AddressError) as exc:
        validate_address(address)
    assert exc.value.code == "forbidden_character"
    assert f"position {at + 1}" in exc.value.message


# Deliverability: the domain must have somewhere to deliver mail. Answers come from the DNS
# server on loopback, reached through the same resolver settings the portal uses.


@pytest.fixture
def portal_dns(dns_server, settings):
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.DNS_TIMEOUT = 1.0
    return dns_server


def test_it_accepts_a_domain_with_mail_servers(portal_dns, dns_zone):
    dns_zone(
        {
            "mailing.test": [{"MX": [10, "mx.mailing.test"]}],
            "mx.mailing.test": [{"A": "192.0.2.10"}],
        }
    )
    assert validate_address("anna@mailing.test", check_deliverability=True).address


def test_it_refuses_a_domain_that_does_not_exist(portal_dns, dns_zone):
    dns_zone({})
    with pytest.raises(AddressError) as exc:
        validate_address("anna@no-such-domain.test", check_deliverability=True)
    assert exc.value.code == "undeliverable"
    assert "does not accept email" in exc.value.message


def test_it_refuses_a_domain_that_publishes_a_null_mx(portal_dns, dns_zone):
    dns_zone({"nomail.test": [{"MX": [0, "."]}]})
    with pytest.raises(AddressError) as exc:
        validate_address("anna@nomail.test", check_deliverability=True)
    assert exc.value.code == "undeliverable"


def test_a_dns_timeout_does_not_block_a_real_address(portal_dns, dns_zone):
    # A slow resolver must not stop an accountant from saving a contact.
    dns_zone({"slow.test": ["TIMEOUT"]})
    assert validate_address("anna@slow.test", check_deliverability=True).address == (
        "anna@slow.test"
    )
