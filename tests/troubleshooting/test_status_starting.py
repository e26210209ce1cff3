"""The public status page: linked from every page, and "starting" just after a start."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from portal.services import heartbeat_record
from troubleshooting.status import platform_status


def test_every_page_links_the_status_page_in_its_footer(client, db):
    body = client.get(reverse("account_login")).content.decode()
    assert f'href="{reverse("troubleshooting:status")}"' in body


def test_just_after_a_start_a_missing_worker_is_starting_not_down(db):
    now = timezone.now()
    status = platform_status(now=now, started=now - timedelta(seconds=20))
    assert status.starting
    assert not status.workers_alive


def test_after_the_first_minute_a_missing_worker_is_not_running(db):
    now = timezone.now()
    assert not platform_status(now=now, started=now - timedelta(minutes=5)).starting


def test_a_worker_that_reported_is_not_starting(db):
    heartbeat_record(name="worker")
    now = timezone.now()
    status = platform_status(now=now, started=now - timedelta(seconds=5))
    assert status.workers_alive
    assert not status.starting


def test_the_page_explains_starting_in_plain_words(client, db, monkeypatch):
    from troubleshooting import status

    monkeypatch.setattr(status, "STARTED_AT", timezone.now().timestamp())
    body = client.get(reverse("troubleshooting:status")).content.decode()
    assert "The portal has just started" in body
    assert "Not running" not in body
