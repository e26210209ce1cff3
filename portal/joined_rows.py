"""Model instances from one hand-written SELECT that joins several tables.

For a query a busy page runs on every view whose ORM form costs more to build than to run:
the Problems pages' mailboxes in trouble, a filtered relation with ``select_related`` and
``only``, took 1.3 ms of Python to build and compile and 0.8 ms to run, for a handful of
rows. Here the caller writes the FROM, WHERE and ORDER BY (with `Part`'s table aliases),
the columns are listed from the models, and each value goes through the converters Django
applies to that field on that database (SQLite's datetimes, JSON), so the instances are the
ones a queryset with ``only()`` would have built. The SQL must hold for every database the
portal runs on (PostgreSQL and SQLite): use the backend's ``operators`` for anything that
differs between them.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model


@dataclass(frozen=True)
class Part:
    """One table of the join: its model, its alias in the SQL, and the fields read of it
    (names or attnames; none: every field; the primary key is always read: a row whose key
    is NULL, a LEFT JOIN that found nothing, gives None)."""

    model: type[Model]
    alias: str
    names: tuple[str, ...] = ()

    @cached_property
    def fields(self) -> tuple[Field, ...]:
        if not self.names:
            return tuple(self.model._meta.concrete_fields)
        # In the model's own order: Model.from_db fills the deferred ones in by position.
        wanted = {self._field(name).attname for name in self.names}
        wanted.add(self.model._meta.pk.attname)
        return tuple(f for f in self.model._meta.concrete_fields if f.attname in wanted)

    @cached_property
    def named_positions(self) -> list[int]:
        """Where each of ``names`` is among `fields` (`values_from` gives them in that order)."""
        return [self.fields.index(self._field(name)) for name in self.names]

    def _field(self, name: str) -> Field:
        return self.model._meta.pk if name == "pk" else self.model._meta.get_field(name)

    @cached_property
    def attnames(self) -> list[str]:
        return [f.attname for f in self.fields]

    @cached_property
    def pk_index(self) -> int:
        return self.fields.index(self.model._meta.pk)


def columns(parts: Sequence[Part], *, using: str = DEFAULT_DB_ALIAS) -> str:
    """The SELECT list for ``parts``, in the order `select` reads it."""
    quote = connections[using].ops.quote_name
    return ", ".join(
        f"{quote(part.alias)}.{quote(field.column)}" for part in parts for field in part.fields
    )


def select(
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    parts: Sequence[Part],
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> list[tuple[Model | None, ...]]:
    """Run ``sql`` (a SELECT of `columns`) and give each row as one instance per part, None
    for a part the row holds no row of. Relations between them are the caller's to set."""
    result = []
    for values in _converted_rows(sql, params, parts, using):
        instances: list[Model | None] = []
        start = 0
        for part in parts:
            own = values[start : start + len(part.fields)]
            start += len(part.fields)
            if own[part.pk_index] is None:
                instances.append(None)
            else:
                instances.append(part.model.from_db(using, part.attnames, own))
        result.append(tuple(instances))
    return result


def values_from(
    parts: Sequence[Part],
    clause: str,
    params: Sequence[Any] | Mapping[str, Any],
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> list[tuple[Any, ...]]:
    """The rows of `select_from` as plain values, no instances, as ``values_list`` gives
    them: each part's ``names`` in the order given ("pk" for the key), each value as the ORM
    converts it. For a page of many rows read only to be shown."""
    sql = f"SELECT {columns(parts, using=using)} {clause}"
    positions = []
    start = 0
    for part in parts:
        positions += [start + i for i in part.named_positions]
        start += len(part.fields)
    return [
        tuple(values[i] for i in positions) for values in _converted_rows(sql, params, parts, using)
    ]


def _converted_rows(
    sql: str, params: Sequence[Any] | Mapping[str, Any], parts: Sequence[Part], using: str
) -> list[list[Any]]:
    connection = connections[using]
    converters = _converters(connection, tuple(parts))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    result = []
    for row in rows:
        values = list(row)
        for i, found, column in converters:
            for convert in found:
                values[i] = convert(values[i], column, connection)
        result.append(values)
    return result


# The converters of each parts' columns, per database connection (each thread has its own:
# Django binds converters to a connection's operations), worked out once: for the columns
# every request reads (the signed-in user, the membership and its firm) working them out
# was a tenth of a bare view's Python. Weak: a connection goes with its thread.
_CONVERTERS: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict] = weakref.WeakKeyDictionary()


def _converters(connection: BaseDatabaseWrapper, parts: tuple[Part, ...]) -> list[tuple]:
    """(column index, converters, column expression) of each column that has converters."""
    known = _CONVERTERS.setdefault(connection, {})
    found = known.get(parts)
    if found is None:
        found = []
        index = 0
        for part in parts:
            for field in part.fields:
                column = field.get_col(part.alias)
                own = connection.ops.get_db_converters(column) + column.get_db_converters(
                    connection
                )
                if own:
                    found.append((index, own, column))
                index += 1
        known[parts] = found
    return found


def select_from(
    parts: Sequence[Part],
    clause: str,
    params: Sequence[Any] | Mapping[str, Any],
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> list[tuple[Model | None, ...]]:
    """`select` of ``parts``' `columns` and ``clause``, the rest of the statement (its FROM
    on)."""
    sql = f"SELECT {columns(parts, using=using)} {clause}"
    return select(sql, params, parts, using=using)


def placeholders(values: Sequence[Any]) -> str:
    """The parameter markers of an ``IN (...)`` list of ``values`` (one ``%s`` each)."""
    return ", ".join(["%s"] * len(values))


def counts_per_key(
    table: str,
    alias: str,
    key: str,
    keys: Sequence[Any],
    where: str = "",
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> dict[Any, int]:
    """How many rows of ``table`` (``alias`` in the SQL) each of ``keys``, values of its
    column ``key``, has among those the condition ``where`` admits; keys with none are
    left out. A list's count column for the rows it shows (the ORM's ``values`` and
    ``annotate(Count)`` took 2,300-3,000 calls of Python per page to build)."""
    if not keys:
        return {}
    condition = f" AND ({where})" if where else ""
    sql = (
        f"SELECT {alias}.{key}, COUNT(*) FROM {table} {alias}"  # noqa: S608 (no values in it)
        f" WHERE {alias}.{key} IN ({placeholders(keys)}){condition}"
        f" GROUP BY {alias}.{key}"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, list(keys))
        return dict(cursor.fetchall())
