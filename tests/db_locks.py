"""Races in tests: whether another connection is waiting on a row or index lock, and a
mark for the tests that need PostgreSQL's concurrency."""

from __future__ import annotations

import pytest
from django.db import connection


def only_on_postgresql(reason: str) -> pytest.MarkDecorator:
    """Skip the test on SQLite (CI's embedded step), which runs one writer at a time and
    has no row locks, deferred triggers or advisory locks; CI runs it on PostgreSQL."""
    return pytest.mark.skipif(connection.vendor != "postgresql", reason=reason)


def someone_waits_for_a_lock() -> bool:
    """Whether a session of this test database is blocked on a lock (PostgreSQL), as the
    second writer of a race is once it has reached the first one's uncommitted rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
