"""One place that builds the DNS resolver every lookup in the portal uses.

Pointing DNS_NAMESERVERS/DNS_PORT at another server moves address checks, domain checks and
the check_domain command together, which is how tests aim them at a server on loopback.
"""

from __future__ import annotations

import dns.resolver
from django.conf import settings


def make_resolver(*, timeout: float | None = None) -> dns.resolver.Resolver:
    if settings.DNS_NAMESERVERS:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(settings.DNS_NAMESERVERS)
        resolver.port = settings.DNS_PORT
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout if timeout is not None else settings.DNS_TIMEOUT
    resolver.timeout = resolver.lifetime
    return resolver
