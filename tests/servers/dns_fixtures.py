"""Pytest fixtures for the loopback DNS server.

Import the fixtures into a conftest.py (``from tests.servers.dns_fixtures import dns_server
# noqa: F401``) and build resolvers with :func:`make_resolver`. The server lives for the
whole session; a test that changes its zone should use ``dns_zone`` so the next test starts
from an empty zone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dns.resolver
import pytest

from tests.servers.dns_server import LoopbackDNSServer, Zone

__all__ = ["dns_server", "dns_zone", "make_resolver"]


def make_resolver(server: LoopbackDNSServer, timeout: float = 2.0) -> dns.resolver.Resolver:
    """A resolver that asks only ``server``, giving up after ``timeout`` seconds in all.

    Built like the app builds its own (nameservers, port, timeout/lifetime) and without
    the host's /etc/resolv.conf, so no test ever reaches real DNS.
    """
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


@pytest.fixture(scope="session")
def dns_server() -> Iterator[LoopbackDNSServer]:
    """One loopback DNS server (UDP and TCP on 127.0.0.1) for the test session."""
    with LoopbackDNSServer() as server:
        yield server


@pytest.fixture
def dns_zone(dns_server: LoopbackDNSServer) -> Iterator[Callable[[Zone], LoopbackDNSServer]]:
    """Set the zone for one test: ``dns_zone({...})``; emptied again afterwards."""

    def serve(zone: Zone) -> LoopbackDNSServer:
        dns_server.set_zone(zone)
        return dns_server

    yield serve
    dns_server.set_zone({})
