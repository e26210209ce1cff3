"""Reads of the practice's own data shared by several pages."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from portal.models import Client, Contact, ContactAddress, Firm


def clients_matching(clients: QuerySet[Client], *, firm: Firm, query: str) -> QuerySet[Client]:
    """`clients` whose name, a contact's name or a contact's address contains `query`
    (case-insensitive). On PostgreSQL each part is one scan of a trigram index (portal
    migration 0005); the contacts' and addresses' matches are client ids PostgreSQL hashes
    once, so the cost follows the matches, not the number of clients."""
    return clients.filter(
        Q(display_name__icontains=query)
        | Q(
            pk__in=Contact.objects.filter(client__firm=firm, name__icontains=query).values(
                "client_id"
            )
        )
        | Q(
            pk__in=ContactAddress.objects.filter(
                firm=firm, normalized__contains=query.lower()
            ).values("contact__client_id")
        )
    )
