"""A firm-wide count is made once for everyone asking at the same moment: the others wait
for it when there is none, or keep showing the last one while it is recounted."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache

from portal import cache_once
from portal.cache_once import cached_once


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


class SlowCount:
    """A count that takes as long as the test says, and remembers how often it ran."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.runs = 0
        self.started = threading.Event()
        self.finish = threading.Event()

    def __call__(self) -> object:
        self.runs += 1
        self.started.set()
        assert self.finish.wait(10)
        return self.value


def _in_thread(function, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(function()))
    thread.start()
    return thread


def test_a_value_is_counted_once_and_then_read():
    counts = []

    first = cached_once("k", lambda: counts.append(1) or 42, fresh_seconds=60)
    second = cached_once("k", lambda: counts.append(1) or 43, fresh_seconds=60)

    assert (first, second, len(counts)) == (42, 42, 1)


def test_none_is_a_value_worth_keeping():
    counts = []

    cached_once("k", lambda: counts.append(1), fresh_seconds=60)
    cached_once("k", lambda: counts.append(1), fresh_seconds=60)

    assert len(counts) == 1


def test_two_asking_at_once_for_a_missing_value_count_it_once():
    count = SlowCount(7)
    results: list = []
    first = _in_thread(lambda: cached_once("k", count, fresh_seconds=60), results)
    assert count.started.wait(10)
    second = _in_thread(lambda: cached_once("k", count, fresh_seconds=60), results)
    time.sleep(0.2)  # the second is waiting for the first's count, not counting

    count.finish.set()
    first.join(10)
    second.join(10)

    assert results == [7, 7]
    assert count.runs == 1


def test_an_expired_value_is_shown_while_one_request_counts_it_again():
    cached_once("k", lambda: "old", fresh_seconds=0.05)
    time.sleep(0.1)
    count = SlowCount("new")
    results: list = []
    counting = _in_thread(lambda: cached_once("k", count, fresh_seconds=60), results)
    assert count.started.wait(10)

    shown_meanwhile = cached_once("k", count, fresh_seconds=60)

    count.finish.set()
    counting.join(10)
    assert shown_meanwhile == "old"
    assert results == ["new"]
    assert count.runs == 1
    assert cached_once("k", count, fresh_seconds=60) == "new"


def test_a_new_generation_shows_the_last_count_while_one_request_counts_it():
    cached_once("k:1", lambda: "before the link", fresh_seconds=60, meanwhile="k:last")
    count = SlowCount("after the link")
    results: list = []
    counting = _in_thread(
        lambda: cached_once("k:2", count, fresh_seconds=60, meanwhile="k:last"), results
    )
    assert count.started.wait(10)

    shown_meanwhile = cached_once("k:2", count, fresh_seconds=60, meanwhile="k:last")

    count.finish.set()
    counting.join(10)
    assert shown_meanwhile == "before the link"
    assert results == ["after the link"]
    assert count.runs == 1
    assert cached_once("k:2", count, fresh_seconds=60, meanwhile="k:last") == "after the link"


def test_the_first_to_ask_after_a_change_counts_afresh():
    cached_once("k:1", lambda: "before the link", fresh_seconds=60, meanwhile="k:last")

    assert cached_once("k:2", lambda: "after the link", fresh_seconds=60, meanwhile="k:last") == (
        "after the link"
    )


def test_a_count_that_never_ends_holds_the_others_only_so_long(monkeypatch):
    monkeypatch.setattr(cache_once, "WAIT_SECONDS", 0.2)
    cache.add("k:computing", "someone else's", timeout=30)  # a claim whose count hangs

    assert cached_once("k", lambda: 5, fresh_seconds=60) == 5


def test_a_count_that_fails_lets_the_next_request_count():
    def broken() -> int:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        cached_once("k", broken, fresh_seconds=60)

    assert cached_once("k", lambda: 3, fresh_seconds=60) == 3


def test_a_cache_out_of_reach_costs_a_count_not_the_page(monkeypatch, caplog):
    def refused(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    for method in ("get", "add", "set", "delete"):
        monkeypatch.setattr(cache, method, refused)

    assert cached_once("k", lambda: 9, fresh_seconds=60) == 9
    assert "cache out of reach" in caplog.text
