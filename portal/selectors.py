"""Reads of the practice's own data shared by several pages."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet, Value
from django.db.models.functions import Upper

from portal.choices import choice_label
from portal.models import Client


def clients_matching(clients: QuerySet[Client], *, query: str) -> QuerySet[Client]:
    """`clients` whose name, a contact's name or a contact's address contains `query`
    (case-insensitive). All three are in `Client.search_text`, kept by the database; on
    PostgreSQL one trigram index over it finds the matching clients directly (portal
    migration 0014), so a search costs what it finds, not the number of clients.

    The text is stored in capitals by the database's upper(), so the query is put in
    capitals by the same function: Python's str.upper() folds some letters otherwise."""
    return clients.filter(search_text__contains=Upper(Value(query)))


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
