"""ESP webhooks: a captured Mailgun signature cannot be replayed (with the same or another
body), stale posts are refused, and an ESP whose keys are not configured has no endpoint.

Signatures are computed here with the signing key, exactly as Mailgun computes them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from anymail.exceptions import AnymailInsecureWebhookWarning
from django.db import connection
from django.test import Client
from django.utils import timezone

from invoicing.delivery.models import Delivery, WebhookEvent
from invoicing.models import Invoice
from portal.celery import app as celery_app
from tests.factories import ClientFactory, FirmFactory

SECRET = "hook:pass-7731"
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()
KEY = "key-mailgun-signing-7731"


@pytest.fixture(autouse=True)
def _webhooks(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": KEY}
    settings.WEBHOOK_MAX_AGE_SECONDS = 300
    conf = celery_app.conf
    before = (conf.task_always_eager, conf.task_eager_propagates)
    conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    conf.update(task_always_eager=before[0], task_eager_propagates=before[1])


@pytest.fixture
def delivery(db) -> Delivery:
    firm = FirmFactory()
    client = ClientFactory(firm=firm)
    invoice = Invoice.objects.create(
        firm=firm, client=client, number=1, due_date=datetime.date(2030, 1, 31)
    )
    return Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address="ana@client.test",
        normalized="ana@client.test",
        status=Delivery.Status.SENT,
        esp_message_id="<replay-1@mg.portal.test>",
        verp_token=uuid.uuid4().hex,
    )


def _signature(*, timestamp: int, token: str, key: str = KEY) -> dict:
    digest = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": str(timestamp), "token": token, "signature": digest}


def _event(delivery: Delivery, event: str = "delivered") -> dict:
    return {
        "event": event,
        "id": uuid.uuid4().hex[:22],
        "timestamp": time.time(),
        "recipient": delivery.address,
        "severity": "permanent",
        "reason": "bounce",
        "delivery-status": {"code": 550, "message": "5.1.1 no such user", "description": ""},
        "message": {"headers": {"message-id": delivery.esp_message_id.strip("<>")}},
    }


@pytest.fixture
def post(client, django_capture_on_commit_callbacks):
    def send(body: dict, *, esp: str = "mailgun"):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                f"/webhooks/anymail/{esp}/tracking/",
                data=json.dumps(body).encode(),
                content_type="application/json",
                headers={"Authorization": AUTH},
            )

    return send


def test_a_fresh_signed_post_is_accepted(post, delivery):
    signature = _signature(timestamp=int(time.time()), token=uuid.uuid4().hex)

    response = post({"signature": signature, "event-data": _event(delivery)})

    assert response.status_code == 200
    assert WebhookEvent.objects.count() == 1


def test_the_same_signature_with_another_body_is_refused(post, delivery):
    signature = _signature(timestamp=int(time.time()), token=uuid.uuid4().hex)
    assert post({"signature": signature, "event-data": _event(delivery)}).status_code == 200

    forged = post({"signature": signature, "event-data": _event(delivery, "failed")})

    assert forged.status_code == 400
    assert WebhookEvent.objects.count() == 1
    delivery.refresh_from_db()
    assert delivery.status != Delivery.Status.BOUNCED


def test_an_exact_replay_is_refused(post, delivery):
    body = {
        "signature": _signature(timestamp=int(time.time()), token=uuid.uuid4().hex),
        "event-data": _event(delivery),
    }
    assert post(body).status_code == 200

    assert post(body).status_code == 400
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize(
    "age", [301, 3600, 3 * 365 * 24 * 3600], ids=["5-minutes", "an-hour", "years"]
)
def test_a_stale_timestamp_is_refused_even_with_a_valid_signature(post, delivery, age):
    signature = _signature(timestamp=int(time.time()) - age, token=uuid.uuid4().hex)

    response = post({"signature": signature, "event-data": _event(delivery, "failed")})

    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_a_timestamp_far_in_the_future_is_refused(post, delivery):
    signature = _signature(timestamp=int(time.time()) + 3600, token=uuid.uuid4().hex)

    assert post({"signature": signature, "event-data": _event(delivery)}).status_code == 400


def test_a_post_that_failed_on_our_side_can_be_retried_with_its_token(post, delivery, monkeypatch):
    body = {
        "signature": _signature(timestamp=int(time.time()), token=uuid.uuid4().hex),
        "event-data": _event(delivery),
    }

    def broken(events):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr("invoicing.delivery.webhooks.webhook_events_store", broken)
    with pytest.raises(RuntimeError):
        post(body)  # the test client re-raises what the ESP would see as a 500
    monkeypatch.undo()

    assert post(body).status_code == 200
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize(
    "path",
    [
        "/webhooks/anymail/mailgun/tracking/",
        "/webhooks/anymail/mailgun/inbound/",
        "/webhooks/anymail/postal/tracking/",
        "/webhooks/anymail/mailersend/tracking/",
        "/webhooks/anymail/unisender_go/tracking/",
        "/webhooks/anymail/resend/inbound/",
        "/webhooks/anymail/mandrill/tracking/",
    ],
)
def test_an_esp_without_its_keys_has_no_endpoint(client, settings, path):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}

    response = client.post(
        path, data=b"{}", content_type="application/json", headers={"Authorization": AUTH}
    )

    assert response.status_code == 404


def test_without_the_webhook_secret_events_are_still_refused_not_a_server_error(
    client, settings, db
):
    settings.ANYMAIL = {}

    with pytest.warns(AnymailInsecureWebhookWarning):
        response = client.post(
            "/webhooks/anymail/postmark/tracking/", data=b"{}", content_type="application/json"
        )

    assert response.status_code in (400, 404, 503)
    assert not WebhookEvent.objects.exists()
    assert timezone.now()  # the request was answered, not raised


@pytest.mark.django_db(transaction=True)
def test_of_posts_racing_with_one_token_exactly_one_is_accepted(delivery):
    body = json.dumps(
        {
            "signature": _signature(timestamp=int(time.time()), token=uuid.uuid4().hex),
            "event-data": _event(delivery),
        }
    ).encode()
    start = threading.Barrier(6)

    def send() -> int:
        start.wait()
        try:
            return (
                Client()
                .post(
                    "/webhooks/anymail/mailgun/tracking/",
                    data=body,
                    content_type="application/json",
                    headers={"Authorization": AUTH},
                )
                .status_code
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = sorted(pool.map(lambda _n: send(), range(6)))

    assert codes == [200, 400, 400, 400, 400, 400]
    assert WebhookEvent.objects.count() == 1
