"""Operations of the migrations that have the database keep a state with triggers
(`Client.invoice_addresses` and `search_text`, `Delivery.superseded` and `address_kept`,
`DeliveryProblemsVersion`).

Each such migration keeps its triggers as module-level ``POSTGRESQL`` and ``SQLITE`` lists
of (create, drop) statements (tests/test_database_triggers.py reads them) and fills the new
state for existing rows in batches of ids.
"""

from __future__ import annotations

from django.db import migrations, models

Pairs = list[tuple[str, str]]


def vendor_triggers(*, postgresql: Pairs, sqlite: Pairs) -> migrations.RunPython:
    """Run each pair's create for the database in use, and its drop going back; nothing on
    a database other than PostgreSQL or SQLite."""

    def statements(schema_editor, side: int) -> list[str]:
        vendor = schema_editor.connection.vendor
        pairs = postgresql if vendor == "postgresql" else sqlite if vendor == "sqlite" else []
        return [pair[side] for pair in pairs]

    def create(apps, schema_editor) -> None:
        for sql in statements(schema_editor, 0):
            schema_editor.execute(sql)

    def drop(apps, schema_editor) -> None:
        for sql in statements(schema_editor, 1):
            schema_editor.execute(sql)

    return migrations.RunPython(create, drop, elidable=False)


def in_batches(table: str, sql: str, *, batch: int) -> migrations.RunPython:
    """Run ``sql`` (its two ``%s``: the first and last id of a batch) over ``table``'s ids,
    a batch at a time: in a non-atomic migration, each batch its own transaction, so a
    large table is not filled under one long lock. Nothing to undo going back."""

    def fill(apps, schema_editor) -> None:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"SELECT MIN(id), MAX(id) FROM {table}")  # noqa: S608
            low, high = cursor.fetchone()
            if low is None:
                return
            for start in range(low, high + 1, batch):
                cursor.execute(sql, [start, start + batch - 1])

    return migrations.RunPython(fill, migrations.RunPython.noop)


def add_field_in_place(
    model_name: str, field_name: str, field: models.Field, *, table: str, column: str
) -> migrations.SeparateDatabaseAndState:
    """AddField as ``ALTER TABLE table ADD COLUMN column`` (``column``: its name and SQL
    definition, with a constant default): Django's AddField remakes an SQLite table (a
    copy, then a rename), which other tables' triggers naming it do not survive."""
    name = column.split()[0]
    return migrations.SeparateDatabaseAndState(
        database_operations=[
            migrations.RunSQL(
                f"ALTER TABLE {table} ADD COLUMN {column}",
                f"ALTER TABLE {table} DROP COLUMN {name}",
            )
        ],
        state_operations=[migrations.AddField(model_name=model_name, name=field_name, field=field)],
    )
