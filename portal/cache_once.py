"""Counts worth doing once for everyone who asks at the same moment.

A firm-wide count at scale (the unlinked mail of a million messages, the Problems
dashboard's counts per code) takes a few hundred milliseconds of database time. Kept in the
cache, it expires or its key changes (something was linked, a delivery failed), and every
page load that arrives before the first recount has finished would count again: sixteen
requests at once made sixteen counts, and each of them waited for all the others (a p95 of
1.9 s on a page whose median was 150 ms).

``cached_once`` lets one request count while the others either keep showing the count
they had (it expired: it is at most a few seconds older than it was allowed to be) or,
when there is none under the key yet, wait for that one count instead of making their own.
A count whose key changes with what it counts (a generation) may name a ``meanwhile`` key:
the last count of any generation, shown instead of waiting while one request counts the
new one.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache
from django.core.cache.backends.base import BaseCache

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long the others wait for a count in progress before they count for themselves (the
# one counting may have died, or be stuck on a lock).
WAIT_SECONDS = 5.0
# How long one count may claim the recount; then anyone may count again.
CLAIM_SECONDS = 30
# An expired count stays this long past its time, to be shown while it is recounted.
STALE_SECONDS = 300
_POLL_SECONDS = 0.02


class CacheDown(Exception):
    """The cache did not answer (Redis out of reach): do without it."""


def cache_call(
    method: str, *args: object, using: BaseCache | None = None, **kwargs: object
) -> object:
    """``using.method(*args, **kwargs)`` (the default cache unless ``using``); whatever
    the backend raises when it does not answer is raised as `CacheDown`."""
    try:
        return getattr(cache if using is None else using, method)(*args, **kwargs)
    except Exception as exc:  # each backend raises its own errors (redis.ConnectionError, ...)
        raise CacheDown(f"{type(exc).__name__}: {exc}") from exc


def cached_once(
    key: str, compute: Callable[[], T], *, fresh_seconds: float, meanwhile: str = ""
) -> T:
    """``compute()``'s value, kept under ``key`` for ``fresh_seconds``; at most one caller
    at a time computes it again (any value, None included, is kept). The cache is only a
    shortcut: when it does not answer, the value is computed here (and logged).

    ``meanwhile``: a key that also keeps each value computed; while another caller
    computes a ``key`` that has no value yet, the one under ``meanwhile`` is returned
    rather than waited past (only for counts that may lag their change by a moment)."""
    try:
        entry = cache_call("get", key)
        if entry is not None and time.time() < entry[0]:
            return entry[1]
        claim = f"{key}:computing"
        token = uuid.uuid4().hex
        claimed = cache_call("add", claim, token, timeout=CLAIM_SECONDS)
    except CacheDown as down:
        logger.warning("cache out of reach (%s): %s counted without it", down, key)
        return compute()
    if claimed:
        try:
            return _compute_and_keep(key, compute, fresh_seconds, meanwhile)
        finally:
            # Only our own claim: one that outlived CLAIM_SECONDS may be another's by now.
            with contextlib.suppress(CacheDown):
                if cache_call("get", claim) == token:
                    cache_call("delete", claim)
    if entry is not None:
        return entry[1]  # expired: shown while the one who claimed it counts again
    if meanwhile:
        with contextlib.suppress(CacheDown):
            entry = cache_call("get", meanwhile)
        if entry is not None:
            return entry[1]  # the last count before the change, while it is counted again
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        with contextlib.suppress(CacheDown):
            entry = cache_call("get", key)
        if entry is not None:
            return entry[1]
    return _compute_and_keep(key, compute, fresh_seconds, meanwhile)


def _compute_and_keep(
    key: str, compute: Callable[[], T], fresh_seconds: float, meanwhile: str = ""
) -> T:
    value = compute()
    entry = (time.time() + fresh_seconds, value)
    with contextlib.suppress(CacheDown):  # kept next time, then
        cache_call("set", key, entry, fresh_seconds + STALE_SECONDS)
        if meanwhile:
            cache_call("set", meanwhile, entry, fresh_seconds + STALE_SECONDS)
    return value
