"""Races in tests: whether another connection is waiting on a row or index lock, two
writers raced so that the second meets the first's uncommitted rows, and a mark for the
tests that need PostgreSQL's concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from django.db import connection, transaction

T = TypeVar("T")
U = TypeVar("U")


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


def second_meets_first(first: Callable[[], T], second: Callable[[], U]) -> tuple[T, U]:
    """Race two writers on threads with their own connections: ``first`` runs in a
    transaction that stays open until ``second`` (started once ``first`` has done its
    work) waits for one of its locks, or 30 s have passed; then both finish. Returns what
    each returned; raises what either raised. ``second`` makes its own transaction, if any."""
    results: dict[str, object] = {}
    errors: list[BaseException] = []
    first_done = threading.Event()
    second_waits = threading.Event()

    def run_first() -> None:
        try:
            with transaction.atomic():
                results["first"] = first()
                first_done.set()
                assert second_waits.wait(timeout=30)
        except BaseException as exc:  # raised again by the caller's thread
            errors.append(exc)
        finally:
            first_done.set()
            connection.close()

    def run_second() -> None:
        try:
            assert first_done.wait(timeout=30)
            results["second"] = second()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while not someone_waits_for_a_lock() and time.monotonic() < deadline:
        time.sleep(0.01)
    second_waits.set()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results["first"], results["second"]
