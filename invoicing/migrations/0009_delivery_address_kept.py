"""`Delivery.address_kept`: whether the delivery's client still has its address (a contact
of that client with that normalized address). A problem of an address the client no longer
has is not current: fixing a contact's address lifts the old address's problem
(troubleshooting.selectors._current_deliveries).

That was asked of every current problem on every read, as an EXISTS over the addresses and
their contacts: a third of the query of a code's page of cards (2-2.7 ms of 7, most of it
building and planning the subquery), and part of every client list's problem badges and a
client's Problems tab. Stored, it is one more column of the partial index of current
problems.

The database keeps it:
- invoicing_delivery: its own trigger answers on insert, and on an update of its client,
  address, firm or of the column itself (so a value written from Python is replaced by the
  answer). On PostgreSQL it is a BEFORE trigger, and the addresses it finds are locked FOR
  SHARE: a delivery written while another transaction deletes its address waits for that
  transaction, and then finds the address gone.
- portal_contactaddress: an address inserted, deleted, changed or moved to another contact
  has its client's deliveries to it asked again (`SET address_kept = address_kept`, which
  fires their trigger); another contact of the client may have the same address.
- portal_contact: a contact moved to another client has the deliveries to its addresses
  asked again on both; one inserted with addresses already there (a bulk load, within the
  deferred foreign keys), or deleted before its addresses (raw SQL), on its client. Django
  deletes a contact's addresses before the contact: their own triggers answer then.

Forms, imports, bulk_create, update(), deletes and COPY (`seed_scale`) are all covered, in
the writer's transaction. Existing rows are filled in batches of ids.

The dashboard's cached counts (troubleshooting.DeliveryProblemsVersion) need no trigger of
their own for it: the column changes only when an address or contact does, or a delivery
moves, and each of those raises the version already (troubleshooting migration 0006).
"""

from django.db import migrations, models
from django.db.models import Q

from portal.migration_ops import add_field_in_place, in_batches, vendor_triggers

BATCH = 50_000

# "The client of delivery `d` has a contact with d's address."
KEPT = (
    "EXISTS (SELECT 1 FROM portal_contactaddress a JOIN portal_contact c ON c.id = a.contact_id"
    " WHERE a.firm_id = {d}.firm_id AND a.normalized = {d}.normalized"
    " AND c.client_id = {d}.client_id{lock})"
)


def kept(d: str, *, lock: bool = False) -> str:
    return KEPT.format(d=d, lock=" FOR SHARE OF a" if lock else "")


def deliveries_of(address: str, client: str) -> str:
    """The deliveries to the address row `address` (NEW or OLD) of the client `client`."""
    return (
        f"firm_id = {address}.firm_id AND normalized = {address}.normalized"
        f" AND client_id = {client}"
    )


def client_of(contact: str) -> str:
    return f"(SELECT client_id FROM portal_contact WHERE id = {contact})"


def touch(where: str) -> str:
    """Have the deliveries matching `where` asked again (their own trigger answers)."""
    return f"UPDATE invoicing_delivery SET address_kept = address_kept WHERE {where}"


def of_contacts_addresses(contact: str, client: str) -> str:
    """The deliveries of `client` to any address of the contact row `contact` (portal_contact
    has no firm_id: its client's is the deliveries')."""
    return (
        f"client_id = {client} AND normalized IN"
        f" (SELECT normalized FROM portal_contactaddress WHERE contact_id = {contact}.id)"
    )


# The columns whose change moves a delivery to another client address.
MOVING_COLUMNS = "client_id, normalized, firm_id"
ADDRESS_CHANGED = (
    "OLD.normalized <> NEW.normalized OR OLD.contact_id <> NEW.contact_id"
    " OR OLD.firm_id <> NEW.firm_id"
)
# An address inserted can only make kept what was not; one deleted, only the reverse.
ADDRESS_OLD = deliveries_of("OLD", client_of("OLD.contact_id")) + " AND address_kept"
ADDRESS_NEW = deliveries_of("NEW", client_of("NEW.contact_id")) + " AND NOT address_kept"
CONTACT_OLD = of_contacts_addresses("OLD", "OLD.client_id") + " AND address_kept"
CONTACT_NEW = of_contacts_addresses("NEW", "NEW.client_id") + " AND NOT address_kept"

POSTGRESQL = [
    (
        f"""
        CREATE FUNCTION invoicing_delivery_address_kept() RETURNS trigger AS $$
        BEGIN
            NEW.address_kept := {kept("NEW", lock=True)};
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER invoicing_delivery_address_kept
            BEFORE INSERT OR UPDATE OF {MOVING_COLUMNS}, address_kept ON invoicing_delivery
            FOR EACH ROW EXECUTE FUNCTION invoicing_delivery_address_kept();
        """,
        """
        DROP TRIGGER IF EXISTS invoicing_delivery_address_kept ON invoicing_delivery;
        DROP FUNCTION IF EXISTS invoicing_delivery_address_kept();
        """,
    ),
    (
        f"""
        CREATE FUNCTION portal_contactaddress_delivery_kept() RETURNS trigger AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                {touch(ADDRESS_OLD)};
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                {touch(ADDRESS_NEW)};
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER portal_contactaddress_delivery_kept_insert_delete
            AFTER INSERT OR DELETE ON portal_contactaddress
            FOR EACH ROW EXECUTE FUNCTION portal_contactaddress_delivery_kept();
        CREATE TRIGGER portal_contactaddress_delivery_kept_update
            AFTER UPDATE OF normalized, contact_id, firm_id ON portal_contactaddress
            FOR EACH ROW WHEN ({ADDRESS_CHANGED})
            EXECUTE FUNCTION portal_contactaddress_delivery_kept();
        """,
        """
        DROP TRIGGER IF EXISTS portal_contactaddress_delivery_kept_insert_delete
            ON portal_contactaddress;
        DROP TRIGGER IF EXISTS portal_contactaddress_delivery_kept_update
            ON portal_contactaddress;
        DROP FUNCTION IF EXISTS portal_contactaddress_delivery_kept();
        """,
    ),
    (
        f"""
        CREATE FUNCTION portal_contact_delivery_kept() RETURNS trigger AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                {touch(CONTACT_OLD)};
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                {touch(CONTACT_NEW)};
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER portal_contact_delivery_kept_insert_delete
            AFTER INSERT OR DELETE ON portal_contact
            FOR EACH ROW EXECUTE FUNCTION portal_contact_delivery_kept();
        CREATE TRIGGER portal_contact_delivery_kept_update
            AFTER UPDATE OF client_id ON portal_contact
            FOR EACH ROW WHEN (OLD.client_id <> NEW.client_id)
            EXECUTE FUNCTION portal_contact_delivery_kept();
        """,
        """
        DROP TRIGGER IF EXISTS portal_contact_delivery_kept_insert_delete ON portal_contact;
        DROP TRIGGER IF EXISTS portal_contact_delivery_kept_update ON portal_contact;
        DROP FUNCTION IF EXISTS portal_contact_delivery_kept();
        """,
    ),
]

# SQLite: AFTER triggers only (no BEFORE trigger may change NEW), the delivery's answering
# after the row is written; recursive_triggers is off (Django leaves it so), so that write
# does not fire the same trigger again. One writer at a time: nothing to lock.
_SQLITE_ANSWER = (
    f"UPDATE invoicing_delivery SET address_kept = {kept('invoicing_delivery')}"
    " WHERE id = NEW.id"
)

SQLITE = [
    (
        f"""
        CREATE TRIGGER invoicing_delivery_address_kept_insert AFTER INSERT
        ON invoicing_delivery FOR EACH ROW BEGIN {_SQLITE_ANSWER}; END
        """,
        "DROP TRIGGER IF EXISTS invoicing_delivery_address_kept_insert",
    ),
    (
        f"""
        CREATE TRIGGER invoicing_delivery_address_kept_update
        AFTER UPDATE OF {MOVING_COLUMNS}, address_kept ON invoicing_delivery
        FOR EACH ROW BEGIN {_SQLITE_ANSWER}; END
        """,
        "DROP TRIGGER IF EXISTS invoicing_delivery_address_kept_update",
    ),
    (
        f"""
        CREATE TRIGGER portal_contactaddress_delivery_kept_insert
        AFTER INSERT ON portal_contactaddress FOR EACH ROW BEGIN {touch(ADDRESS_NEW)}; END
        """,
        "DROP TRIGGER IF EXISTS portal_contactaddress_delivery_kept_insert",
    ),
    (
        f"""
        CREATE TRIGGER portal_contactaddress_delivery_kept_delete
        AFTER DELETE ON portal_contactaddress FOR EACH ROW BEGIN {touch(ADDRESS_OLD)}; END
        """,
        "DROP TRIGGER IF EXISTS portal_contactaddress_delivery_kept_delete",
    ),
    (
        f"""
        CREATE TRIGGER portal_contactaddress_delivery_kept_update
        AFTER UPDATE OF normalized, contact_id, firm_id ON portal_contactaddress
        FOR EACH ROW WHEN {ADDRESS_CHANGED} BEGIN
            {touch(ADDRESS_OLD)};
            {touch(ADDRESS_NEW)};
        END
        """,
        "DROP TRIGGER IF EXISTS portal_contactaddress_delivery_kept_update",
    ),
    (
        f"""
        CREATE TRIGGER portal_contact_delivery_kept_insert AFTER INSERT ON portal_contact
        FOR EACH ROW BEGIN {touch(CONTACT_NEW)}; END
        """,
        "DROP TRIGGER IF EXISTS portal_contact_delivery_kept_insert",
    ),
    (
        f"""
        CREATE TRIGGER portal_contact_delivery_kept_delete AFTER DELETE ON portal_contact
        FOR EACH ROW BEGIN {touch(CONTACT_OLD)}; END
        """,
        "DROP TRIGGER IF EXISTS portal_contact_delivery_kept_delete",
    ),
    (
        f"""
        CREATE TRIGGER portal_contact_delivery_kept_update
        AFTER UPDATE OF client_id ON portal_contact
        FOR EACH ROW WHEN OLD.client_id <> NEW.client_id BEGIN
            {touch(CONTACT_OLD)};
            {touch(CONTACT_NEW)};
        END
        """,
        "DROP TRIGGER IF EXISTS portal_contact_delivery_kept_update",
    ),
]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("invoicing", "0008_delivery_from_domain"),
        ("portal", "0014_client_search_text"),
    ]

    operations = [
        add_field_in_place(
            "delivery",
            "address_kept",
            models.BooleanField(db_default=True, default=True, editable=False),
            table="invoicing_delivery",
            column="address_kept boolean NOT NULL DEFAULT TRUE",
        ),
        vendor_triggers(postgresql=POSTGRESQL, sqlite=SQLITE),
        # The column starts TRUE: the deliveries whose address left the client are asked
        # (their trigger answers).
        in_batches(
            "invoicing_delivery",
            touch("id BETWEEN %s AND %s AND NOT " + kept("invoicing_delivery")),
            batch=BATCH,
        ),
        migrations.RemoveIndex(model_name="delivery", name="delivery_current_problem_idx"),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(
                condition=~Q(problem_code="")
                & Q(superseded=False, is_test=False, address_kept=True),
                fields=["firm", "problem_code"],
                name="delivery_current_problem_idx",
            ),
        ),
    ]
