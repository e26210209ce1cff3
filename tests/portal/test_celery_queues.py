"""Work is split into Celery queues by kind, so a flood of one kind never starves another."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from portal.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


def _queue_of(task_name: str) -> str:
    return celery_app.amqp.router.route({}, task_name)["queue"].name


@pytest.fixture
def queues():
    """Every queue on the in-memory broker, empty at the start and the end."""
    with celery_app.connection_for_write() as conn:
        simple = {name: conn.SimpleQueue(name) for name in settings.CELERY_QUEUES}
        for queue in simple.values():
            queue.clear()
        yield simple
        for queue in simple.values():
            queue.clear()
            queue.close()


def test_each_kind_of_work_has_its_own_queue():
    assert _queue_of("mailsync.sync_mailbox") == "sync"
    assert _queue_of("invoicing.deliveries_send") == "send"
    assert _queue_of("invoicing.process_webhook_event") == "webhooks"
    assert _queue_of("troubleshooting.check_domain") == "checks"
    assert _queue_of("portal.heartbeat") == "default"
    # It only enqueues: a backlog of syncs must not delay the next dispatch.
    assert _queue_of("mailsync.dispatch_due") == "default"


def test_every_task_goes_to_a_queue_a_worker_consumes():
    celery_app.loader.import_default_modules()
    portal_tasks = [name for name in celery_app.tasks if not name.startswith("celery.")]

    assert portal_tasks
    assert {_queue_of(name) for name in portal_tasks} <= set(settings.CELERY_QUEUES)
    assert set(settings.CELERY_TASK_ROUTES) <= set(portal_tasks)  # no stale route names


def test_a_webhook_flood_leaves_the_sync_queue_with_only_its_own_work(queues):
    for _ in range(200):
        celery_app.send_task("invoicing.process_webhook_event")
    celery_app.send_task("mailsync.sync_mailbox", args=[1])

    assert queues["webhooks"].qsize() == 200
    assert queues["sync"].qsize() == 1  # the next sync worker takes it at once


def test_the_embedded_run_consumes_every_queue():
    run = (ROOT / "scripts" / "run.sh").read_text()
    worker = re.search(r"celery -A portal worker[^\n]*(?:\\\n[^\n]*)*", run)

    assert worker, "scripts/run.sh starts no Celery worker"
    listed = re.search(r"-Q\s+([\w,]+)", worker.group(0))
    assert listed and set(listed.group(1).split(",")) == set(settings.CELERY_QUEUES)
