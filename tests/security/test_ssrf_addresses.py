"""Which addresses the portal connects to for a member-typed mail server: public only.

Every numeric spelling the operating system accepts for a private address is refused,
because the guard checks the address the host resolves to, not the text.
"""

from __future__ import annotations

import socket

import pytest

from mailsync.netguard import Guard, HostRefused, connect, is_public_address, resolve
from tests.security.conftest import BannerServer

REFUSED_HOSTS = [
    "127.0.0.1",
    "2130706433",  # 127.0.0.1 as one decimal number
    "0x7f000001",  # ... in hexadecimal
    "0177.0.0.1",  # ... with an octal first part
    "127.1",  # ... with parts left out
    "0",  # 0.0.0.0
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "192.0.2.10",  # documentation range
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "::1",
    "[::1]",
    "::",
    "::ffff:127.0.0.1",  # IPv4-mapped IPv6
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "localhost",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_a_private_or_reserved_address_in_any_spelling_is_refused(host):
    with pytest.raises(HostRefused):
        resolve(host, Guard(allow_private=False))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_a_public_address_is_accepted(address):
    assert resolve(address, Guard(allow_private=False)) == [address]
    assert is_public_address(address)


def test_a_name_with_one_private_address_among_public_ones_is_refused():
    guard = Guard(allow_private=False, resolver=lambda host: ["8.8.8.8", "10.1.2.3"])

    with pytest.raises(HostRefused):
        resolve("mail.mixed.test", guard)


def test_the_refusal_names_the_host_but_not_the_address_it_resolves_to():
    guard = Guard(allow_private=False, resolver=lambda host: ["10.20.30.40"])

    with pytest.raises(HostRefused) as refused:
        resolve("intranet.corp.test", guard)

    assert "intranet.corp.test" in str(refused.value)
    assert "10.20.30.40" not in str(refused.value)


def test_a_refused_host_is_never_connected_to(banner_server: BannerServer):
    with pytest.raises(HostRefused):
        connect("127.0.0.1", banner_server.port, 2, Guard(allow_private=False))

    assert banner_server.accepted == 0


def test_the_operator_setting_allows_private_hosts(banner_server: BannerServer):
    with connect("127.0.0.1", banner_server.port, 2, Guard(allow_private=True)) as sock:
        assert sock.getpeername()[0] == "127.0.0.1"


def test_the_connection_goes_to_the_address_that_was_checked(banner_server: BannerServer):
    answers = iter([["127.0.0.1"], ["192.0.2.99"]])  # a second lookup would get another one
    looked_up: list[str] = []

    def resolver(host: str) -> list[str]:
        looked_up.append(host)
        return next(answers)

    with connect("rebind.test", banner_server.port, 2, Guard(True, resolver)) as sock:
        assert sock.getpeername()[0] == "127.0.0.1"
    assert looked_up == ["rebind.test"]


def test_a_name_that_does_not_resolve_is_a_lookup_error():
    def resolver(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(socket.gaierror):
        resolve("nowhere.test", Guard(False, resolver))
