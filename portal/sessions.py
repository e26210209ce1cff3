"""Sessions read from the shared cache, kept in the database (``SESSION_ENGINE`` when
``CACHE_URL`` is set).

Django's ``cached_db`` saves a query on every request, but as it stands a cache that does
not answer breaks every signed-in request (it stores a session read from the database
without catching the cache's error), and signing out during a cache blip fails and leaves
the session in the cache for as long as the session lives. Here the cache is only ever a
shortcut: each of its errors is logged and the database answers, and a session stays in
the cache for `CACHE_SECONDS` at most, so one the cache failed to forget or to update is
read from the database again within minutes.
"""

from __future__ import annotations

import logging

from django.contrib.sessions.backends.cached_db import SessionStore as CachedDBStore
from django.contrib.sessions.backends.db import SessionStore as DBStore

from portal.cache_once import CacheDown, cache_call

logger = logging.getLogger(__name__)

CACHE_SECONDS = 300


class SessionStore(CachedDBStore):
    def load(self) -> dict:
        data = self._cache_call("get", self.cache_key)
        if data is not None:
            return data
        row = self._get_session_from_db()
        if row is None:
            return {}
        data = self.decode(row.session_data)
        self._cache_call("set", self.cache_key, data, self._cache_seconds(row.expire_date))
        return data

    def save(self, must_create: bool = False) -> None:
        DBStore.save(self, must_create)
        self._cache_call("set", self.cache_key, self._session, self._cache_seconds())

    def delete(self, session_key: str | None = None) -> None:
        DBStore.delete(self, session_key)
        key = session_key or self.session_key
        if key is not None:
            self._cache_call("delete", self.cache_key_prefix + key)

    def exists(self, session_key: str | None) -> bool:
        # Whether a new key is free: the database decides (the cache may have forgotten).
        return DBStore.exists(self, session_key)

    def _cache_seconds(self, expiry: object = None) -> int:
        age = self.get_expiry_age(expiry=expiry) if expiry is not None else self.get_expiry_age()
        return max(0, min(CACHE_SECONDS, age))

    def _cache_call(self, method: str, *args: object) -> object:
        try:
            return cache_call(method, *args, using=self._cache)
        except CacheDown as down:
            logger.warning("session cache did not answer (%s: %s); the database did", method, down)
            return None
