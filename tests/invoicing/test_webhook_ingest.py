"""Webhook ingest at volume: one INSERT per post, one processing "kick" per window, no loss.

The posts go through the real middleware stack, anymail's views and Celery's in-memory broker
(tests.settings: ``memory://``, not eager), so a kick is a real message on the queue; the
tests take it off the queue and run its task, as a worker would.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from kombu.exceptions import OperationalError

from invoicing.delivery.models import Delivery, WebhookEvent
from invoicing.delivery.tasks import webhook_event_process_task, webhook_events_sweep_task
from invoicing.models import Invoice
from portal.celery import app as celery_app
from tests.factories import ClientFactory, FirmFactory
from tests.invoicing.test_webhooks import (
    AUTH,
    SECRET,
    _sendgrid_event,
    postmark_bounce,
    postmark_delivery,
)

S = Delivery.Status
POSTMARK = "/webhooks/anymail/postmark/tracking/"
SENDGRID = "/webhooks/anymail/sendgrid/tracking/"
sendgrid_unsupported = pytest.mark.filterwarnings(
    "ignore::anymail.exceptions.AnymailNotSupportedWarning"
)


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}


@contextlib.contextmanager
def broker_queue(name: str):
    """One Celery queue on the in-memory broker, empty at the start and the end."""
    with celery_app.connection_for_write() as conn:
        simple = conn.SimpleQueue(name)
        simple.clear()
        yield simple
        simple.clear()
        simple.close()


@pytest.fixture
def queue():
    """The webhooks queue (where webhook processing is routed), empty at the start."""
    with broker_queue("webhooks") as simple:
        yield simple


def queued_tasks(queue) -> list:
    messages = []
    while True:
        try:
            messages.append(queue.get(block=False))
        except queue.Empty:
            return messages


def run_like_a_worker(message) -> None:
    args, kwargs, _ = message.decode()
    celery_app.tasks[message.headers["task"]].apply(args=args, kwargs=kwargs)


@pytest.fixture
def deliveries(db):
    firm = FirmFactory()
    invoice = Invoice.objects.create(
        firm=firm, client=ClientFactory(firm=firm), number=1, due_date=datetime.date(2030, 1, 31)
    )

    def make(count: int) -> list[Delivery]:
        return [
            Delivery.objects.create(
                firm=firm,
                invoice=invoice,
                client=invoice.client,
                address=f"rcpt{n}@client.test",
                normalized=f"rcpt{n}@client.test",
                status=S.SENT,
                esp_message_id=str(uuid.uuid4()),
                verp_token=uuid.uuid4().hex,
            )
            for n in range(count)
        ]

    return make


@pytest.fixture
def post(client, django_capture_on_commit_callbacks):
    """POST as the ESP does; on-commit callbacks (the kick) run before it returns."""

    def send(path: str, body: object):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                path,
                data=json.dumps(body),
                content_type="application/json",
                headers={"Authorization": AUTH},
            )

    return send


def _statuses(deliveries: list[Delivery]) -> list[str]:
    return [Delivery.objects.get(pk=d.pk).status for d in deliveries]


def test_a_postmark_post_is_stored_with_one_statement(post, deliveries):
    [delivery] = deliveries(1)
    with CaptureQueriesContext(connection) as queries:
        response = post(POSTMARK, postmark_bounce(delivery.esp_message_id, email=delivery.address))
    assert response.status_code == 200
    assert [q["sql"].split()[:3] for q in queries] == [
        ["INSERT", "INTO", '"invoicing_webhookevent"']
    ]
    assert WebhookEvent.objects.get().payload["event_type"] == "bounced"


@sendgrid_unsupported
def test_a_sendgrid_batch_is_stored_with_one_insert(post, deliveries, queue):
    batch = deliveries(3)
    events = [_sendgrid_event(d.esp_message_id, d.address, "delivered") for d in batch]
    with CaptureQueriesContext(connection) as queries:
        response = post(SENDGRID, events)
    assert response.status_code == 200
    assert len(queries) == 1
    assert WebhookEvent.objects.filter(esp="SendGrid").count() == 3
    [kick] = queued_tasks(queue)
    run_like_a_worker(kick)
    assert _statuses(batch) == [S.DELIVERED] * 3


def test_a_burst_of_events_queues_one_kick_and_all_are_processed(
    post, deliveries, queue, monkeypatch
):
    # A window no slow test machine outlasts: the burst must fall inside one.
    monkeypatch.setattr("invoicing.delivery.tasks.KICK_WINDOW_SECONDS", 300)
    burst = deliveries(5)
    for delivery in burst:
        assert post(POSTMARK, postmark_delivery(delivery.esp_message_id, email=delivery.address))
    [kick] = queued_tasks(queue)
    assert kick.headers["task"] == "invoicing.process_webhook_event"
    assert kick.headers["eta"]  # runs after the window, so after every event it covered
    assert WebhookEvent.objects.filter(processed_at__isnull=True).count() == 5
    run_like_a_worker(kick)
    assert _statuses(burst) == [S.DELIVERED] * 5
    assert not WebhookEvent.objects.filter(processed_at__isnull=True).exists()


def test_a_lost_kick_is_made_up_by_the_sweep(post, deliveries, queue):
    [delivery] = deliveries(1)
    post(POSTMARK, postmark_bounce(delivery.esp_message_id, email=delivery.address))
    assert len(queued_tasks(queue)) == 1  # taken off the queue and never run: lost
    stored = WebhookEvent.objects.get()
    WebhookEvent.objects.filter(pk=stored.pk).update(
        received=stored.received - datetime.timedelta(minutes=1)
    )
    assert webhook_events_sweep_task() == 1
    assert _statuses([delivery]) == [S.BOUNCED]
    assert webhook_events_sweep_task() == 0


def test_events_are_kept_and_answered_200_while_the_broker_is_down(
    post, deliveries, queue, monkeypatch
):
    first, second = deliveries(2)

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patched:
        patched.setattr(webhook_event_process_task, "apply_async", broker_down)
        response = post(POSTMARK, postmark_delivery(first.esp_message_id, email=first.address))
    assert response.status_code == 200
    assert WebhookEvent.objects.filter(processed_at__isnull=True).count() == 1
    # The failed kick did not use up the window: the next event queues one, which drains both.
    post(POSTMARK, postmark_delivery(second.esp_message_id, email=second.address))
    [kick] = queued_tasks(queue)
    run_like_a_worker(kick)
    assert _statuses([first, second]) == [S.DELIVERED, S.DELIVERED]


def test_an_event_that_fails_is_left_to_the_sweep_and_the_others_are_processed(deliveries):
    good, other = deliveries(2)
    bad = WebhookEvent.objects.create(
        esp="Postmark",
        event_id="broken",
        # A timestamp that is not text cannot be read: processing this event raises.
        payload={"event_type": "delivered", "message_id": other.esp_message_id, "timestamp": 5},
    )
    WebhookEvent.objects.create(
        esp="Postmark",
        event_id="fine",
        payload={
            "event_type": "bounced",
            "message_id": good.esp_message_id,
            "recipient": good.address,
            "mta_response": "550 5.1.1 no such user",
        },
    )
    assert webhook_event_process_task() == 2
    assert _statuses([good, other]) == [S.BOUNCED, S.SENT]
    bad.refresh_from_db()
    assert bad.processed_at is None and "TypeError" in bad.error
    # The next kick does not spin on it; the sweep tries it once per run.
    assert webhook_event_process_task() == 0
    WebhookEvent.objects.filter(pk=bad.pk).update(
        received=bad.received - datetime.timedelta(minutes=1)
    )
    assert webhook_events_sweep_task() == 1


def test_webhook_answers_skip_the_browser_middleware(post, deliveries, client):
    [delivery] = deliveries(1)
    response = post(POSTMARK, postmark_delivery(delivery.esp_message_id))
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response.headers
    assert "X-Frame-Options" not in response.headers
    assert "X-Content-Type-Options" in response.headers  # SecurityMiddleware still runs
    # A path under the prefix that is no webhook gets the portal's usual 404.
    missing = client.post("/webhooks/anymail/nobody/tracking/", headers={"Authorization": AUTH})
    assert missing.status_code == 404
    assert "Content-Security-Policy" in missing.headers


def test_a_webhook_post_for_a_host_the_site_does_not_serve_is_refused(client, deliveries):
    [delivery] = deliveries(1)
    response = client.post(
        POSTMARK,
        data=json.dumps(postmark_delivery(delivery.esp_message_id)),
        content_type="application/json",
        headers={"Authorization": AUTH, "Host": "attacker.example"},
    )
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_only_csrf_exempt_views_take_the_short_path(settings, db):
    settings.WEBHOOK_PATHS = {"/clients/": ""}
    response = HttpClient().get("/clients/")  # a page: signed-in members only
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert "Content-Security-Policy" in response.headers
