"""Through an ESP's HTTP API: an email the ESP may have taken is never sent again on a guess.

anymail's real Postmark backend talks to a loopback HTTP server standing in for Postmark's
API: it answers in time, with an error, or not before the client gives up.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest

from invoicing.delivery.models import Delivery
from invoicing.delivery.sender import OUTCOME_UNKNOWN, deliveries_send
from invoicing.models import PayLink
from invoicing.sending import invoices_send_bulk
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing.factories import invoice_with_lines

S = Delivery.Status


class _PostmarkStandIn(BaseHTTPRequestHandler):
    mode = "ok"  # ok | slow | error

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.mode == "slow":
            time.sleep(1.5)  # longer than the client waits: the email may have been taken
        if self.mode == "error":
            answer, status = {"ErrorCode": 100, "Message": "Maintenance"}, 500
        else:
            answer = {"To": body.get("To"), "MessageID": "pm-1", "ErrorCode": 0}
            answer["Message"], status = "OK", 200
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def postmark(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PostmarkStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {
        "POSTMARK_SERVER_TOKEN": "test-token",
        "POSTMARK_API_URL": f"http://127.0.0.1:{server.server_port}/",
        "REQUESTS_TIMEOUT": 0.5,
    }
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    yield _PostmarkStandIn
    _PostmarkStandIn.mode = "ok"
    server.shutdown()
    server.server_close()


def _queued(firm) -> list[int]:
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@birch.test")
    with mock.patch("invoicing.delivery.tasks.deliveries_send_task.delay"):
        result = invoices_send_bulk(invoices=[invoice_with_lines(client=client)])
    return [d.pk for d in result.deliveries]


def test_an_esp_that_answers_gets_the_email_recorded_as_sent(firm, postmark):
    ids = _queued(firm)
    assert deliveries_send(delivery_ids=ids) == []
    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.esp_message_id) == (S.SENT, "pm-1")


def test_an_esp_that_does_not_answer_in_time_leaves_the_outcome_unknown(firm, postmark):
    postmark.mode = "slow"
    ids = _queued(firm)

    assert deliveries_send(delivery_ids=ids) == []  # nothing to retry: it may have left

    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.problem_code) == (S.UNKNOWN, OUTCOME_UNKNOWN)
    assert PayLink.objects.filter(delivery=delivery).exists()  # its link keeps working


def test_an_esp_error_answer_is_retried_later(firm, postmark):
    postmark.mode = "error"
    ids = _queued(firm)

    assert deliveries_send(delivery_ids=ids) == ids

    assert Delivery.objects.get(pk=ids[0]).status == S.QUEUED
