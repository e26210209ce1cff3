"""`DeliveryProblemsVersion` also rises when the clients nobody can send invoices to change
(troubleshooting.selectors.delivery_code_counts counts them with the delivery problems:
a client with no address that receives invoices, and an invoice to send or resend that has
lines).

What that reads, and so what raises the version, for a client without such an address
(or one no longer there, for a delete):
- invoicing_invoice: inserted or deleted; its status, client or creation time changed;
- invoicing_invoiceline: inserted or deleted, or moved to another invoice;
- portal_client: `invoice_addresses` going from 0 to more, or back (its name and firm
  raise it already, migration 0006).

Deferred constraint triggers on PostgreSQL, plain AFTER triggers on SQLite, as in 0006. A
deferred trigger asks about the client when the transaction commits: an invoice written
in the same transaction as the client's first receiving address raises nothing of its
own, and the address's change of `invoice_addresses` raises the version instead.
"""

from django.db import migrations

from portal.migration_ops import vendor_triggers

TABLE = "troubleshooting_deliveryproblemsversion"

INVOICE_CHANGED = (
    "OLD.status IS DISTINCT FROM NEW.status"
    " OR OLD.client_id IS DISTINCT FROM NEW.client_id"
    " OR OLD.firm_id IS DISTINCT FROM NEW.firm_id"
    " OR OLD.created IS DISTINCT FROM NEW.created"
)
LINE_CHANGED = "OLD.invoice_id IS DISTINCT FROM NEW.invoice_id"
RECEIVING_CHANGED = "(OLD.invoice_addresses = 0) IS DISTINCT FROM (NEW.invoice_addresses = 0)"

# (table, trigger name suffix, event, condition or None).
TRIGGERS = [
    ("invoicing_invoice", "insert", "INSERT", None),
    ("invoicing_invoice", "delete", "DELETE", None),
    ("invoicing_invoice", "update", "UPDATE", INVOICE_CHANGED),
    ("invoicing_invoiceline", "insert", "INSERT", None),
    ("invoicing_invoiceline", "delete", "DELETE", None),
    ("invoicing_invoiceline", "update", "UPDATE", LINE_CHANGED),
    ("portal_client", "receiving", "UPDATE", RECEIVING_CHANGED),
]


def name(table: str, suffix: str) -> str:
    return f"{table}_problems_version_{suffix}"


# The names SET CONSTRAINTS takes (troubleshooting.selectors reads them with 0006's).
CONSTRAINT_TRIGGERS = [name(table, suffix) for table, suffix, _e, _c in TRIGGERS]


def _unreachable(rows: str, where: str = "TRUE") -> str:
    """The firms of the invoice rows ``rows`` (a FROM item ``i`` with firm_id and
    client_id) whose client has no address that receives invoices, or is gone."""
    return (
        f"SELECT i.firm_id AS firm FROM {rows} WHERE ({where}) AND NOT EXISTS ("
        "SELECT 1 FROM portal_client c WHERE c.id = i.client_id AND c.invoice_addresses > 0)"
    )


def _row(record: str) -> str:
    """An invoice trigger's OLD or NEW as the FROM item ``_unreachable`` reads."""
    return f"(SELECT {record}.firm_id AS firm_id, {record}.client_id AS client_id) AS i"


# The firms to raise for each trigger's row: (table, event) -> query of one column.
INVOICE = "invoicing_invoice i"
FIRMS = {
    ("invoicing_invoice", "INSERT"): _unreachable(_row("NEW")),
    ("invoicing_invoice", "DELETE"): _unreachable(_row("OLD")),
    ("invoicing_invoice", "UPDATE"): (
        f"{_unreachable(_row('OLD'))} UNION {_unreachable(_row('NEW'))}"
    ),
    ("invoicing_invoiceline", "INSERT"): _unreachable(INVOICE, "i.id = NEW.invoice_id"),
    ("invoicing_invoiceline", "DELETE"): _unreachable(INVOICE, "i.id = OLD.invoice_id"),
    ("invoicing_invoiceline", "UPDATE"): (
        _unreachable(INVOICE, "i.id IN (OLD.invoice_id, NEW.invoice_id)")
    ),
    ("portal_client", "UPDATE"): "SELECT OLD.firm_id AS firm UNION SELECT NEW.firm_id",
}


def _function(table: str, event: str) -> str:
    return f"troubleshooting_problems_version_{table}_{event.lower()}"


def _postgresql_trigger(table: str, suffix: str, event: str, condition: str | None) -> tuple:
    when = f"WHEN ({condition})" if condition else ""
    raise_ = (
        f"INSERT INTO {TABLE} (firm_id, version) SELECT DISTINCT firm, 1"
        f" FROM ({FIRMS[table, event]}) AS f WHERE firm IS NOT NULL"
        f" ON CONFLICT (firm_id) DO UPDATE SET version = {TABLE}.version + 1"
    )
    return (
        f"""
        CREATE FUNCTION {_function(table, event)}() RETURNS trigger AS $$
        BEGIN
            {raise_};
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER {name(table, suffix)}
            AFTER {event} ON {table} DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW {when} EXECUTE FUNCTION {_function(table, event)}();
        """,
        f"DROP TRIGGER IF EXISTS {name(table, suffix)} ON {table};"
        f"DROP FUNCTION IF EXISTS {_function(table, event)}();",
    )


def _sqlite_trigger(table: str, suffix: str, event: str, condition: str | None) -> tuple:
    when = f"WHEN {condition}" if condition else ""
    return (
        f"""
        CREATE TRIGGER {name(table, suffix)} AFTER {event} ON {table}
        FOR EACH ROW {when} BEGIN
            INSERT INTO {TABLE} (firm_id, version)
            SELECT DISTINCT firm, 1 FROM ({FIRMS[table, event]}) AS f
            WHERE firm IS NOT NULL ON CONFLICT (firm_id) DO UPDATE SET version = version + 1;
        END
        """,
        f"DROP TRIGGER IF EXISTS {name(table, suffix)}",
    )


POSTGRESQL = [_postgresql_trigger(*trigger) for trigger in TRIGGERS]
SQLITE = [_sqlite_trigger(*trigger) for trigger in TRIGGERS]


class Migration(migrations.Migration):

    dependencies = [
        ("invoicing", "0009_delivery_address_kept"),
        ("portal", "0014_client_search_text"),
        ("troubleshooting", "0006_delivery_problems_version"),
    ]

    operations = [vendor_triggers(postgresql=POSTGRESQL, sqlite=SQLITE)]
