"""Races in tests: whether another connection is waiting on a row or index lock."""

from __future__ import annotations

from django.db import connection


def someone_waits_for_a_lock() -> bool:
    """Whether a session of this test database is blocked on a lock (PostgreSQL), as the
    second writer of a race is once it has reached the first one's uncommitted rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
