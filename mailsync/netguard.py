"""Outbound connections a member can aim (mailbox and SMTP servers): public addresses only.

Test account, sync and sending open TCP connections to a host a member typed. Without a
guard that makes the portal a port scanner of its own network (127.0.0.1, 10/8,
169.254.169.254, ...). Every such connection goes through `connect`, which:

- resolves the host ONCE (numeric spellings such as ``2130706433``, ``0x7f000001``,
  ``0177.0.0.1`` or ``127.1`` are parsed the way the operating system would, so they
  cannot slip past a check done on the text);
- refuses the host when ANY of its addresses is not globally routable, including IPv4
  addresses carried inside IPv6 (``::ffff:127.0.0.1``, 6to4, NAT64, Teredo);
- connects to exactly the addresses it checked, never to the name again, so a DNS answer
  that changes between the check and the connection (rebinding) cannot redirect it. TLS
  still verifies the certificate against the host name (callers pass ``server_hostname``).

Private hosts are allowed only when the operator says so (``OUTBOUND_ALLOW_PRIVATE_HOSTS``:
on-premises mail servers, and the loopback servers of the test suite).

Pure Python: no Django imports at module level (the adapters use it); `guard_from_settings`
reads the Django settings when called.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Guard",
    "HostRefused",
    "connect",
    "guard_from_settings",
    "is_public_address",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Sequence[str]]

# IPv6 ranges that carry an IPv4 address the packets end up at.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class HostRefused(OSError):
    """The host resolves to an address the portal may not connect to.

    The message is plain words for the member; it never names the address (a member must
    not learn what internal names resolve to).
    """

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"{host} is not a mail server on the public internet (it points to a private, "
            "local or reserved network address), so the portal does not connect to it"
        )


def _system_resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Guard:
    """The connection policy: whether private addresses are allowed, and how names resolve."""

    allow_private: bool = False
    resolver: Resolver = field(default=_system_resolve, compare=False, repr=False)


DEFAULT_GUARD = Guard()


def is_public_address(value: str | IPAddress) -> bool:
    """True only for a globally routable unicast address (IPv4 or IPv6)."""
    address = ipaddress.ip_address(value) if isinstance(value, str) else value
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if address.teredo is not None or address in _IPV4_COMPATIBLE:
            return False  # tunnels to an address we cannot check
    # is_global alone has changed between Python releases for some ranges; the explicit
    # properties keep the answer the same on every patch release.
    return (
        address.is_global
        and not address.is_private
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    for network in _NAT64:
        if address in network:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _numeric(host: str) -> list[str] | None:
    """The address a numeric host spells, parsed as the OS parses it; None for a name."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return [str(info[4][0]) for info in infos]


def resolve(host: str, guard: Guard = DEFAULT_GUARD) -> list[str]:
    """The addresses to connect to for ``host``, each checked; raises `HostRefused`.

    Raises `socket.gaierror` when the name does not resolve.
    """
    text = (host or "").strip().strip("[]")
    if not text:
        raise socket.gaierror(socket.EAI_NONAME, "no host name given")
    addresses = _numeric(text)
    if addresses is None:
        addresses = list(dict.fromkeys(guard.resolver(text)))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    checked = [ipaddress.ip_address(address.split("%", 1)[0]) for address in addresses]
    if not guard.allow_private and not all(is_public_address(address) for address in checked):
        raise HostRefused(host)
    return [str(address) for address in checked] if not guard.allow_private else addresses


def connect(
    host: str, port: int, timeout: float | None, guard: Guard = DEFAULT_GUARD
) -> socket.socket:
    """A TCP socket to ``host``:``port`` through the guard (see the module docstring)."""
    last_error: OSError | None = None
    for address in resolve(host, guard):
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


def guard_from_settings() -> Guard:
    """The guard the operator configured: ``OUTBOUND_ALLOW_PRIVATE_HOSTS``, and the portal's
    own DNS resolver when ``DNS_NAMESERVERS`` is set (else the system's)."""
    from django.conf import settings

    allow = bool(getattr(settings, "OUTBOUND_ALLOW_PRIVATE_HOSTS", False))
    if not settings.DNS_NAMESERVERS:
        return Guard(allow_private=allow)
    return Guard(allow_private=allow, resolver=_dns_resolve)


def _dns_resolve(host: str) -> list[str]:
    import dns.exception
    import dns.resolver

    from portal.dns import make_resolver

    resolver = make_resolver()
    found: list[str] = []
    nxdomain = False
    for rtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rtype, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as exc:
            nxdomain = nxdomain or isinstance(exc, dns.resolver.NXDOMAIN)
            continue
        except dns.exception.DNSException as exc:
            raise socket.gaierror(socket.EAI_AGAIN, f"{host}: {exc}") from exc
        found.extend(record.to_text() for record in answer)
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve")
    return found
