"""Many rows of one model in one INSERT whose size does not grow with them.

``bulk_create`` builds a statement of rows x columns placeholders: Django prepares every
value and compiles the statement, and psycopg quotes every value into its text, each time
(the statement is too long for either to keep). For the mailbox sync's sources and client
links, 150 rows a batch, that was 6-7 ms a batch against 1.6-1.8 ms for the same rows as
one array per column (bench/README.md, "Sources and links by arrays"). On PostgreSQL the
rows go in as ``INSERT ... SELECT ... FROM unnest(array, array, ...)``; elsewhere (SQLite,
the embedded run) through ``bulk_create``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection
from django.db.models import Model
from django.utils import timezone


def rows_insert(
    model: type[Model],
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """INSERT ``rows`` (values in the order of ``columns``, field attnames such as
    ``message_id``) of ``model``; fields with ``auto_now_add`` not among ``columns`` get
    the current time, as ``bulk_create`` would set them. With ``ignore_conflicts``, a row
    that breaks a unique constraint is left out (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    meta = model._meta
    by_attname = {field.attname: field for field in meta.concrete_fields}
    fields = [by_attname[column] for column in columns]
    if connection.vendor != "postgresql":
        objects = [model(**dict(zip(columns, row, strict=True))) for row in rows]
        model.objects.bulk_create(objects, ignore_conflicts=ignore_conflicts)
        return
    now_fields = [
        field
        for field in meta.concrete_fields
        if getattr(field, "auto_now_add", False) and field.attname not in columns
    ]
    quote = connection.ops.quote_name
    names = [quote(field.column) for field in fields] + [quote(f.column) for f in now_fields]
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
    selected = ", ".join([f"t.c{n}" for n in range(len(fields))] + ["%s"] * len(now_fields))
    aliases = ", ".join(f"c{n}" for n in range(len(fields)))
    # Only the model's own table and column names and their types go into the text.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(names)}) "  # noqa: S608
        f"SELECT {selected} FROM unnest({arrays}) AS t({aliases})"
        + (" ON CONFLICT DO NOTHING" if ignore_conflicts else "")
    )
    # In the order of the placeholders: the times (in the SELECT list), then the arrays.
    params: list[object] = [timezone.now()] * len(now_fields)
    params += [[row[n] for row in rows] for n in range(len(fields))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
