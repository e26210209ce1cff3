"""The triggers the migrations create are all in the migrated database.

SQLite adds or alters a column by rebuilding the table, which silently drops the table's
triggers: a later migration on a table with triggers must create them again. This test
reads every migration that keeps ``POSTGRESQL`` / ``SQLITE`` lists of (create, drop)
statements and checks each trigger they create exists, on whichever database runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from django.db import connection

CREATE_TRIGGER = re.compile(r"CREATE (?:CONSTRAINT )?TRIGGER (\w+)")


PROJECT_APPS = ("accounts", "invoicing", "mailsync", "portal", "troubleshooting")


def _expected_triggers(vendor: str) -> set[str]:
    lists = "POSTGRESQL" if vendor == "postgresql" else "SQLITE"
    names: set[str] = set()
    for app in PROJECT_APPS:
        package = importlib.import_module(f"{app}.migrations")
        for module in pkgutil.iter_modules(package.__path__):
            migration = importlib.import_module(f"{package.__name__}.{module.name}")
            for forward, _backward in getattr(migration, lists, []):
                names.update(CREATE_TRIGGER.findall(forward))
    return names


def _present_triggers() -> set[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_every_trigger_the_migrations_create_is_in_the_database():
    expected = _expected_triggers(connection.vendor)

    assert expected  # the superseded and invoice-address triggers at least
    assert expected <= _present_triggers()
