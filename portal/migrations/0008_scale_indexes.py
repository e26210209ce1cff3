"""Indexes for the pages' heavy queries at scale (a firm of 10,000 clients, a million
messages, 200,000 deliveries: `manage.py seed_scale`, bench/bench_pages.py).

PostgreSQL only: trigram (pg_trgm) GIN indexes for the searches, and B-tree indexes each
named after the query it serves. They are not declared in the models' Meta (GIN with an
operator class cannot be created on SQLite, and keeping them here leaves the other apps'
migration graphs alone); SQLite, the embedded run's small database, gets none of them.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations


class PostgreSQLOnly(migrations.RunSQL):
    """RunSQL that does nothing on other databases."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


# (index name, CREATE INDEX body); each comment names the query the index serves.
INDEXES = [
    # Client list (portal.views.clients.client_list), default sort: a firm's clients of one
    # status by name, a page at a time (and the pager's count).
    (
        "client_list_name_idx",
        "ON portal_client (firm_id, status, lower(display_name), id)",
    ),
    # Client list sorted by newest / oldest (?sort=-created, ?sort=created).
    ("client_list_created_idx", "ON portal_client (firm_id, status, created, id)"),
    # Client search (portal.selectors.clients_matching): name contains, case-insensitive
    # (Django's icontains is UPPER(...) LIKE UPPER(...)).
    (
        "client_name_trgm_idx",
        "ON portal_client USING gin (upper(display_name::text) gin_trgm_ops)",
    ),
    # Client search: a contact's name contains.
    (
        "contact_name_trgm_idx",
        "ON portal_contact USING gin (upper(name::text) gin_trgm_ops)",
    ),
    # Client search: a contact's address contains (normalized is lower case already), and
    # the Problems dashboard's contact addresses on domains that take no mail (ends with).
    (
        "contactaddress_normalized_trgm_idx",
        "ON portal_contactaddress USING gin (normalized gin_trgm_ops)",
    ),
    # Current delivery problems (troubleshooting.selectors._current_deliveries): "is there a
    # newer delivery to the same client address?" for each delivery with a problem.
    (
        "delivery_newer_idx",
        "ON invoicing_delivery (client_id, normalized, created) WHERE NOT is_test",
    ),
    # Problem badges of one page of the client list
    # (troubleshooting.selectors.problem_counts_for_clients) and a client's Problems tab.
    (
        "delivery_client_problem_idx",
        "ON invoicing_delivery (client_id) WHERE problem_code <> ''",
    ),
    # A client's Email tab (mailsync.selectors.client_threads): the client's messages,
    # newest first, read from the index without visiting the links' rows.
    (
        "messageclientlink_client_idx",
        "ON mailsync_messageclientlink (client_id, message_id)",
    ),
    # The same query: each linked message's date from the index (the 200 newest are then
    # fetched), so a client with 20,000 messages does not read 20,000 wide rows.
    ("message_date_idx", "ON mailsync_message (id) INCLUDE (date)"),
    # Invoice list filtered by client (invoicing.selectors.invoice_list with client_id).
    ("invoice_client_number_idx", "ON invoicing_invoice (client_id, number)"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0007_firm_owners_must_use_mfa"),
        ("invoicing", "0004_delivery_sending_claim"),
        ("mailsync", "0004_outgoing_address"),
    ]

    operations = [
        TrigramExtension(),
        *(
            PostgreSQLOnly(
                sql=f"CREATE INDEX IF NOT EXISTS {name} {body}",
                reverse_sql=f"DROP INDEX IF EXISTS {name}",
            )
            for name, body in INDEXES
        ),
    ]
