"""`DeliveryProblemsVersion.cards`: raised by the database whenever what a delivery
problem's card shows changes while the counts stay as they were
(troubleshooting.selectors caches a page's delivery and dead-domain cards under the firm's
``version`` and ``cards`` both; ``version`` alone still keys the counts, so these writes do
not make the dashboard count again).

What the cards show beyond the counts, and so what raises ``cards``:
- invoicing_delivery: a row with a problem saved again (``updated``: its first and last
  seen when it has no failure events), its address as written, whether its client still
  has that address, or its invoice;
- invoicing_deliveryevent: a failure event (the kinds troubleshooting.selectors reads as
  FAILURE_KINDS, as they were when this was written) inserted, deleted or changed, on a
  delivery that has a problem when the writer commits: the card's first and last seen,
  occurrences, reply code, status and server reply;
- invoicing_invoice: renumbered;
- portal_contactaddress: the address as written changed (0006 raises ``version`` for
  the normalized one);
- troubleshooting_addressdomaincheck: a domain that takes no mail checked again (its
  summary, DNS answers and time).

Deferred constraint triggers on PostgreSQL, plain AFTER triggers on SQLite, as in 0006.
"""

from django.db import migrations, models

from portal.migration_ops import add_field_in_place, vendor_triggers

TABLE = "troubleshooting_deliveryproblemsversion"

FAILURE_KINDS = "('soft_bounced', 'bounced', 'rejected', 'complained', 'suppressed', 'failed', 'unknown')"

DELIVERY_SHOWN = (
    "(OLD.problem_code <> '' OR NEW.problem_code <> '') AND ("
    "OLD.updated IS DISTINCT FROM NEW.updated"
    " OR OLD.address IS DISTINCT FROM NEW.address"
    " OR OLD.address_kept IS DISTINCT FROM NEW.address_kept"
    " OR OLD.invoice_id IS DISTINCT FROM NEW.invoice_id)"
)
EVENT_CHANGED = f"OLD.kind IN {FAILURE_KINDS} OR NEW.kind IN {FAILURE_KINDS}"
INVOICE_RENUMBERED = "OLD.number IS DISTINCT FROM NEW.number"
ADDRESS_REWRITTEN = "OLD.address IS DISTINCT FROM NEW.address"
CHECK_SHOWN = (
    "NOT NEW.ok AND (OLD.summary IS DISTINCT FROM NEW.summary"
    " OR OLD.answers IS DISTINCT FROM NEW.answers"
    " OR OLD.checked IS DISTINCT FROM NEW.checked)"
)

# (table, trigger name suffix, event, condition or None).
TRIGGERS = [
    ("invoicing_delivery", "cards", "UPDATE", DELIVERY_SHOWN),
    ("invoicing_deliveryevent", "insert", "INSERT", f"NEW.kind IN {FAILURE_KINDS}"),
    ("invoicing_deliveryevent", "delete", "DELETE", f"OLD.kind IN {FAILURE_KINDS}"),
    ("invoicing_deliveryevent", "update", "UPDATE", EVENT_CHANGED),
    ("invoicing_invoice", "number", "UPDATE", INVOICE_RENUMBERED),
    ("portal_contactaddress", "written", "UPDATE", ADDRESS_REWRITTEN),
    ("troubleshooting_addressdomaincheck", "checked", "UPDATE", CHECK_SHOWN),
]


def name(table: str, suffix: str) -> str:
    return f"{table}_problems_cards_{suffix}"


# The names SET CONSTRAINTS takes (troubleshooting.selectors reads them with 0006's).
CONSTRAINT_TRIGGERS = [name(table, suffix) for table, suffix, _e, _c in TRIGGERS]


def _of_deliveries(ids: str) -> str:
    """The firms of the deliveries ``ids`` that have a problem (as the writer commits)."""
    return (
        "SELECT d.firm_id AS firm FROM invoicing_delivery d"
        f" WHERE d.id IN ({ids}) AND d.problem_code <> ''"
    )


# The firms to raise for each trigger's row: (table, event) -> query of one column "firm".
BOTH = "SELECT OLD.firm_id AS firm UNION SELECT NEW.firm_id"
FIRMS = {
    ("invoicing_delivery", "UPDATE"): BOTH,
    ("invoicing_deliveryevent", "INSERT"): _of_deliveries("NEW.delivery_id"),
    ("invoicing_deliveryevent", "DELETE"): _of_deliveries("OLD.delivery_id"),
    ("invoicing_deliveryevent", "UPDATE"): _of_deliveries("OLD.delivery_id, NEW.delivery_id"),
    ("invoicing_invoice", "UPDATE"): BOTH,
    ("portal_contactaddress", "UPDATE"): BOTH,
    ("troubleshooting_addressdomaincheck", "UPDATE"): BOTH,
}


def _function(table: str, suffix: str) -> str:
    return f"troubleshooting_problems_cards_{table}_{suffix}"


def _postgresql_trigger(table: str, suffix: str, event: str, condition: str) -> tuple:
    raise_ = (
        f"INSERT INTO {TABLE} (firm_id, version, cards) SELECT DISTINCT firm, 0, 1"
        f" FROM ({FIRMS[table, event]}) AS f WHERE firm IS NOT NULL"
        f" ON CONFLICT (firm_id) DO UPDATE SET cards = {TABLE}.cards + 1"
    )
    return (
        f"""
        CREATE FUNCTION {_function(table, suffix)}() RETURNS trigger AS $$
        BEGIN
            {raise_};
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER {name(table, suffix)}
            AFTER {event} ON {table} DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION {_function(table, suffix)}();
        """,
        f"DROP TRIGGER IF EXISTS {name(table, suffix)} ON {table};"
        f"DROP FUNCTION IF EXISTS {_function(table, suffix)}();",
    )


def _sqlite_trigger(table: str, suffix: str, event: str, condition: str) -> tuple:
    # "WHERE firm IS NOT NULL": SQLite's parser needs a WHERE before ON CONFLICT after a
    # SELECT.
    return (
        f"""
        CREATE TRIGGER {name(table, suffix)} AFTER {event} ON {table}
        FOR EACH ROW WHEN {condition} BEGIN
            INSERT INTO {TABLE} (firm_id, version, cards)
            SELECT DISTINCT firm, 0, 1 FROM ({FIRMS[table, event]}) AS f
            WHERE firm IS NOT NULL ON CONFLICT (firm_id) DO UPDATE SET cards = cards + 1;
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
        ("troubleshooting", "0007_problems_version_no_recipient"),
    ]

    operations = [
        add_field_in_place(
            "deliveryproblemsversion",
            "cards",
            models.BigIntegerField(db_default=0, default=0),
            table=TABLE,
            column="cards bigint NOT NULL DEFAULT 0",
        ),
        vendor_triggers(postgresql=POSTGRESQL, sqlite=SQLITE),
    ]
