"""`Client.search_text`: everything a client search matches, in one column: the client's
name, its contacts' names and its contacts' addresses, one to a line
(portal.selectors.clients_matching).

A search asked three trigram indexes (client names, contact names, addresses) and joined
what they found back to the clients, so PostgreSQL walked every active client of the firm
testing it against three hashed lists: 5.7 ms of its time for "birch" among 10,000
clients, whatever the search found. One trigram index over this column finds the matching
clients directly (1.2 ms for the page, 0.9 ms for the count).

The database keeps it, as it keeps `invoice_addresses` (migration 0012): the client's own
trigger rebuilds it whenever a client row is inserted, renamed, or its `search_text` is
written (so a stale value saved from Python, as Model.save() writes every column, is
replaced). The triggers on portal_contact (insert, delete, a change of name or client) and
portal_contactaddress (insert, delete, a change of address or contact) touch the clients
concerned (`SET search_text = search_text`), which fires the rebuild. Forms, imports,
bulk_create, update(), Django's delete collector and COPY are all covered.

On PostgreSQL the rebuild runs in a BEFORE trigger, after the client row is locked, and a
trigger function's query sees what other transactions committed before it: two
transactions changing the same client's contacts both end with the true text.

Case: stored in capitals by the database's upper(), and the search's text is put in
capitals by the same function in the query (`search_text LIKE '%' || UPPER(query) || '%'`),
so both sides fold case alike (Python's str.upper() does not: "ß" becomes "SS") and a
row is never put in capitals while searching (with upper() on the column, rechecking the
1,500 rows the index offered for "anna.1@" took 3.9 ms; without, 2.1 ms). SQLite's upper()
and LIKE fold ASCII letters only, as the three icontains it replaces did.

The name and contact-name trigram indexes of migration 0008 served only the search and go;
the address one stays (the Problems page's dead-domain suffix match uses it).
"""

import importlib

from django.db import migrations, models

from portal.migration_ops import add_field_in_place, in_batches, vendor_triggers

PostgreSQLOnly = importlib.import_module("portal.migrations.0008_scale_indexes").PostgreSQLOnly

BATCH = 5_000

# What each vendor joins the lines with; the order is the rows' (ids) on PostgreSQL.
_LINES = {
    "postgresql": ("string_agg({column}, E'\\n' ORDER BY {order})", "E'\\n'"),
    "sqlite": ("group_concat({column}, char(10))", "char(10)"),
}


def text(vendor: str, client: str, name: str) -> str:
    """The search text of the client whose id is the SQL expression `client` and whose
    name is `name`."""
    join, newline = _LINES[vendor]
    names = join.format(column="c.name", order="c.id")
    addresses = join.format(column="a.normalized", order="a.id")
    return (
        f"upper({name} || {newline}"
        f" || COALESCE((SELECT {names} FROM portal_contact c WHERE c.client_id = {client}), '')"
        f" || {newline} || COALESCE((SELECT {addresses} FROM portal_contactaddress a"
        f" JOIN portal_contact c ON c.id = a.contact_id WHERE c.client_id = {client}), ''))"
    )


def touch(where: str) -> str:
    """Fire the client's rebuild for the clients matching `where`."""
    return f"UPDATE portal_client SET search_text = search_text WHERE {where}"


def clients_of_contacts(*contacts: str) -> str:
    return f"id IN (SELECT client_id FROM portal_contact WHERE id IN ({', '.join(contacts)}))"


CONTACT_CHANGED = "OLD.name <> NEW.name OR OLD.client_id <> NEW.client_id"
ADDRESS_CHANGED = "OLD.normalized <> NEW.normalized OR OLD.contact_id <> NEW.contact_id"

POSTGRESQL = [
    (
        f"""
        CREATE FUNCTION portal_client_search_text() RETURNS trigger AS $$
        BEGIN
            NEW.search_text := {text("postgresql", "NEW.id", "NEW.display_name")};
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER portal_client_search_text
            BEFORE INSERT OR UPDATE OF search_text, display_name ON portal_client
            FOR EACH ROW EXECUTE FUNCTION portal_client_search_text();
        """,
        """
        DROP TRIGGER IF EXISTS portal_client_search_text ON portal_client;
        DROP FUNCTION IF EXISTS portal_client_search_text();
        """,
    ),
    (
        f"""
        CREATE FUNCTION portal_contact_search_text() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {touch("id = NEW.client_id")};
            ELSIF TG_OP = 'DELETE' THEN
                {touch("id = OLD.client_id")};
            ELSE
                {touch("id IN (OLD.client_id, NEW.client_id)")};
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER portal_contact_search_text_insert_delete
            AFTER INSERT OR DELETE ON portal_contact
            FOR EACH ROW EXECUTE FUNCTION portal_contact_search_text();
        CREATE TRIGGER portal_contact_search_text_update
            AFTER UPDATE OF name, client_id ON portal_contact
            FOR EACH ROW WHEN ({CONTACT_CHANGED})
            EXECUTE FUNCTION portal_contact_search_text();
        """,
        """
        DROP TRIGGER IF EXISTS portal_contact_search_text_insert_delete ON portal_contact;
        DROP TRIGGER IF EXISTS portal_contact_search_text_update ON portal_contact;
        DROP FUNCTION IF EXISTS portal_contact_search_text();
        """,
    ),
    (
        f"""
        CREATE FUNCTION portal_contactaddress_search_text() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {touch(clients_of_contacts("NEW.contact_id"))};
            ELSIF TG_OP = 'DELETE' THEN
                {touch(clients_of_contacts("OLD.contact_id"))};
            ELSE
                {touch(clients_of_contacts("OLD.contact_id", "NEW.contact_id"))};
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER portal_contactaddress_search_text_insert_delete
            AFTER INSERT OR DELETE ON portal_contactaddress
            FOR EACH ROW EXECUTE FUNCTION portal_contactaddress_search_text();
        CREATE TRIGGER portal_contactaddress_search_text_update
            AFTER UPDATE OF normalized, contact_id ON portal_contactaddress
            FOR EACH ROW WHEN ({ADDRESS_CHANGED})
            EXECUTE FUNCTION portal_contactaddress_search_text();
        """,
        """
        DROP TRIGGER IF EXISTS portal_contactaddress_search_text_insert_delete
            ON portal_contactaddress;
        DROP TRIGGER IF EXISTS portal_contactaddress_search_text_update
            ON portal_contactaddress;
        DROP FUNCTION IF EXISTS portal_contactaddress_search_text();
        """,
    ),
]

# SQLite: no BEFORE trigger may change NEW, so the client's triggers write the text after
# the row; recursive_triggers is off (Django leaves it so), so that write does not fire
# the same trigger again. One writer at a time: no concurrency to think of.
_SQLITE_REBUILD = (
    "UPDATE portal_client SET search_text = "
    f"{text('sqlite', 'NEW.id', 'NEW.display_name')} WHERE id = NEW.id"
)

SQLITE = [
    (
        f"""
        CREATE TRIGGER portal_client_search_text_insert AFTER INSERT ON portal_client
        FOR EACH ROW BEGIN {_SQLITE_REBUILD}; END
        """,
        "DROP TRIGGER IF EXISTS portal_client_search_text_insert",
    ),
    (
        f"""
        CREATE TRIGGER portal_client_search_text_update
        AFTER UPDATE OF search_text, display_name ON portal_client
        FOR EACH ROW BEGIN {_SQLITE_REBUILD}; END
        """,
        "DROP TRIGGER IF EXISTS portal_client_search_text_update",
    ),
    (
        f"""
        CREATE TRIGGER portal_contact_search_text_insert AFTER INSERT ON portal_contact
        FOR EACH ROW BEGIN {touch("id = NEW.client_id")}; END
        """,
        "DROP TRIGGER IF EXISTS portal_contact_search_text_insert",
    ),
    (
        f"""
        CREATE TRIGGER portal_contact_search_text_delete AFTER DELETE ON portal_contact
        FOR EACH ROW BEGIN {touch("id = OLD.client_id")}; END
        """,
        "DROP TRIGGER IF EXISTS portal_contact_search_text_delete",
    ),
    (
        f"""
        CREATE TRIGGER portal_contact_search_text_update
        AFTER UPDATE OF name, client_id ON portal_contact
        FOR EACH ROW WHEN {CONTACT_CHANGED} BEGIN
            {touch("id IN (OLD.client_id, NEW.client_id)")};
        END
        """,
        "DROP TRIGGER IF EXISTS portal_contact_search_text_update",
    ),
    (
        f"""
        CREATE TRIGGER portal_contactaddress_search_text_insert
        AFTER INSERT ON portal_contactaddress FOR EACH ROW BEGIN
            {touch(clients_of_contacts("NEW.contact_id"))};
        END
        """,
        "DROP TRIGGER IF EXISTS portal_contactaddress_search_text_insert",
    ),
    (
        f"""
        CREATE TRIGGER portal_contactaddress_search_text_delete
        AFTER DELETE ON portal_contactaddress FOR EACH ROW BEGIN
            {touch(clients_of_contacts("OLD.contact_id"))};
        END
        """,
        "DROP TRIGGER IF EXISTS portal_contactaddress_search_text_delete",
    ),
    (
        f"""
        CREATE TRIGGER portal_contactaddress_search_text_update
        AFTER UPDATE OF normalized, contact_id ON portal_contactaddress
        FOR EACH ROW WHEN {ADDRESS_CHANGED} BEGIN
            {touch(clients_of_contacts("OLD.contact_id", "NEW.contact_id"))};
        END
        """,
        "DROP TRIGGER IF EXISTS portal_contactaddress_search_text_update",
    ),
]


SEARCH_INDEX = "ON portal_client USING gin (search_text gin_trgm_ops)"
OLD_INDEXES = [
    ("client_name_trgm_idx", "ON portal_client USING gin (upper(display_name::text) gin_trgm_ops)"),
    ("contact_name_trgm_idx", "ON portal_contact USING gin (upper(name::text) gin_trgm_ops)"),
]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("portal", "0013_client_list_name_idx_covers_name")]

    operations = [
        add_field_in_place(
            "client",
            "search_text",
            models.TextField(db_default="", default="", editable=False),
            table="portal_client",
            column="search_text text NOT NULL DEFAULT ''",
        ),
        vendor_triggers(postgresql=POSTGRESQL, sqlite=SQLITE),
        # Every existing client: writing the column fires the rebuild.
        in_batches("portal_client", touch("id BETWEEN %s AND %s"), batch=BATCH),
        PostgreSQLOnly(
            # Client search (portal.selectors.clients_matching): search_text contains the
            # query in capitals.
            sql=[f"CREATE INDEX IF NOT EXISTS client_search_text_trgm_idx {SEARCH_INDEX}"]
            + [f"DROP INDEX IF EXISTS {name}" for name, _body in OLD_INDEXES],
            reverse_sql=[f"CREATE INDEX IF NOT EXISTS {name} {body}" for name, body in OLD_INDEXES]
            + ["DROP INDEX IF EXISTS client_search_text_trgm_idx"],
        ),
    ]
