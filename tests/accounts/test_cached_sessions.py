"""With a shared cache (CACHE_URL), sessions are read from it and written through to the
database (portal.sessions): signing out still ends a session for every browser and process
holding it, an emptied cache signs nobody out, a cache that does not answer leaves the
portal working, and what the cache failed to forget lasts minutes, not weeks."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client as HttpClient
from django.test import override_settings
from django.urls import reverse
from freezegun import freeze_time

from portal.sessions import CACHE_SECONDS
from tests.test_settings_and_security import _settings_with

CACHED = "portal.sessions"
UNREACHABLE_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens there
    }
}


@pytest.fixture
def cached_sessions(settings):
    settings.SESSION_ENGINE = CACHED
    cache.clear()
    yield
    cache.clear()


def _engine(env: dict[str, str]) -> str:
    found = _settings_with(
        {"DEBUG": "1", **env},
        code="import django; django.setup(); from django.conf import settings; "
        "print(settings.SESSION_ENGINE)",
    )
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


def test_sessions_are_cached_when_every_process_shares_the_cache():
    assert _engine({"CACHE_URL": "redis://127.0.0.1:6379/1"}) == CACHED


def test_sessions_stay_in_the_database_when_each_process_has_its_own_cache():
    assert _engine({"CACHE_URL": ""}) == "django.contrib.sessions.backends.db"


def test_signing_out_ends_the_session_in_another_browser_holding_its_cookie(cached_sessions, owner):
    first = HttpClient()
    first.force_login(owner.user)
    second = HttpClient()
    second.cookies = first.cookies  # the same session, as another process would read it
    assert second.get(reverse("portal:client_list")).status_code == 200

    first.post(reverse("account_logout"))

    response = second.get(reverse("portal:client_list"))
    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_an_emptied_cache_signs_nobody_out(cached_sessions, owner_client):
    assert owner_client.get(reverse("portal:client_list")).status_code == 200

    cache.clear()  # Redis restarted: it keeps nothing on disk

    assert owner_client.get(reverse("portal:client_list")).status_code == 200


def test_a_cache_that_does_not_answer_leaves_members_signed_in_and_able_to_sign_out(
    cached_sessions, owner_client
):
    with override_settings(CACHES=UNREACHABLE_CACHE):
        assert owner_client.get(reverse("portal:client_list")).status_code == 200

        owner_client.post(reverse("account_logout"))

        assert owner_client.get(reverse("portal:client_list")).status_code == 302
    assert not Session.objects.exists()


def test_a_session_the_cache_failed_to_forget_ends_within_minutes(cached_sessions, owner):
    http = HttpClient()
    with freeze_time("2026-12-07 10:00") as clock:
        http.force_login(owner.user)
        assert http.get(reverse("portal:client_list")).status_code == 200
        Session.objects.all().delete()  # signed out while the cache did not answer

        clock.tick(datetime.timedelta(seconds=CACHE_SECONDS + 1))

        assert http.get(reverse("portal:client_list")).status_code == 302
