"""Reads of the practice's own data shared by several pages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from portal.choices import choice_label
from portal.models import Client, Contact, ContactAddress, Firm

# pg_trgm finds a LIKE pattern through its index only from three word characters in a row.
_TRIGRAM = re.compile(r"\w{3}")


def clients_matching(clients: QuerySet[Client], *, firm: Firm, query: str) -> QuerySet[Client]:
    """`clients` whose name, a contact's name or a contact's address contains `query`
    (case-insensitive). On PostgreSQL each part is one scan of a trigram index (portal
    migration 0008) giving client ids, which PostgreSQL hashes once each: the cost follows
    the matches, not the number of clients. The contacts need no firm of their own:
    `clients` is the firm's.

    The name is asked as ids too when the query holds a trigram: tested on the row, it was
    an upper() and a LIKE on every client of the firm (at 10,000 clients, a third of the
    search's time for "birch"). Without one the index cannot help, and a list of ids only
    costs more than testing each row (a one-letter search: 45 -> 65 ms)."""
    if _TRIGRAM.search(query):
        names = Client.objects.filter(firm=firm, display_name__icontains=query).values("pk")
        by_name = Q(pk__in=names)
    else:
        by_name = Q(display_name__icontains=query)
    return clients.filter(
        by_name
        | Q(pk__in=Contact.objects.filter(name__icontains=query).values("client_id"))
        | Q(
            pk__in=ContactAddress.objects.filter(
                firm=firm, normalized__contains=query.lower()
            ).values("contact__client_id")
        )
    )


@dataclass(frozen=True, slots=True)
class ClientRow:
    """One client as the client list shows it (portal/clients/_row.html reads this and
    nothing else, and is rendered once per content: portal.rows)."""

    pk: int
    display_name: str
    kind_label: str
    status_label: str
    contact_count: int
    problem_count: int

    @classmethod
    def of(cls, client: Client) -> ClientRow:
        """``client`` with the list's counts set on it (``contact_count``, and
        ``problem_count`` where the Problems app counted)."""
        return cls(
            pk=client.pk,
            display_name=client.display_name,
            kind_label=choice_label(client, "kind"),
            status_label=choice_label(client, "status"),
            contact_count=client.contact_count,
            problem_count=getattr(client, "problem_count", 0),
        )
