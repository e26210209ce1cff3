"""A loopback stand-in for Stripe's HTTP API, which the real `stripe` SDK talks to.

It implements only what the portal calls, ``POST /v1/checkout/sessions``: form-encoded
parameters as Stripe takes them (``line_items[0][price_data][unit_amount]=12000``), a Bearer
secret key, idempotency keys replayed the way Stripe replays them, and a JSON answer shaped
like Stripe's Checkout Session object. Every request is recorded for the test to read.

Import the fixtures into a test module::

    from tests.servers.stripe_api import stripe_api, stripe_server  # noqa: F401

``stripe_server`` runs once per session on a free port; ``stripe_api`` forgets what it
recorded and points the portal's Stripe settings at it for one test.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest

__all__ = [
    "SECRET_KEY",
    "WEBHOOK_SECRET",
    "Recorded",
    "StripeAPIServer",
    "stripe_api",
    "stripe_server",
]

SECRET_KEY = "sk_test_portal_loopback"
WEBHOOK_SECRET = "whsec_portal_loopback_test"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    # Flat, as sent: {"line_items[0][price_data][unit_amount]": "12000", ...}
    form: dict[str, str]


@dataclass
class _State:
    requests: list[Recorded] = field(default_factory=list)
    # Idempotency-Key → the parameters first sent with it and the answer, replayed as Stripe
    # replays it (and refused, as Stripe refuses it, with other parameters).
    answers: dict[str, tuple[dict[str, str], tuple[int, bytes]]] = field(default_factory=dict)
    # (status, error type, message) to answer the next requests with, to play an outage.
    error: tuple[int, str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _session(form: dict[str, str]) -> dict[str, object]:
    """A Checkout Session as Stripe returns it on creation (the fields the portal reads)."""
    session_id = "cs_test_" + secrets.token_hex(24)
    metadata = {
        key.removeprefix("metadata[").removesuffix("]"): value
        for key, value in form.items()
        if key.startswith("metadata[")
    }
    quantity = int(form.get("line_items[0][quantity]", "1"))
    unit_amount = int(form.get("line_items[0][price_data][unit_amount]", "0"))
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": unit_amount * quantity,
        "amount_total": unit_amount * quantity,
        "cancel_url": form.get("cancel_url"),
        "client_reference_id": form.get("client_reference_id"),
        "currency": form.get("line_items[0][price_data][currency]"),
        "livemode": False,
        "metadata": metadata,
        "mode": form.get("mode"),
        "payment_intent": None,
        "payment_status": "unpaid",
        "status": "open",
        "success_url": form.get("success_url"),
        "url": f"https://checkout.stripe.com/c/pay/{session_id}#loopback",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        form = dict(parse_qsl(body, keep_blank_values=True))
        state = self.server.state
        with state.lock:
            state.requests.append(
                Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, form)
            )
            status, payload = self._answer(form)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", "req_" + secrets.token_hex(8))
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, form: dict[str, str]) -> tuple[int, bytes]:
        state = self.server.state
        if self.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return _error(401, "invalid_request_error", "Invalid API Key provided.")
        if state.error is not None:
            return _error(*state.error)
        if self.path != "/v1/checkout/sessions":
            return _error(404, "invalid_request_error", f"Unrecognized request URL ({self.path}).")
        key = self.headers.get("Idempotency-Key", "")
        if key and key in state.answers:
            first_form, answer = state.answers[key]
            if first_form != form:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            return answer
        answer = (200, json.dumps(_session(form)).encode())
        if key:
            state.answers[key] = (form, answer)
        return answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output quiet; the requests are recorded instead


def _error(status: int, kind: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"type": kind, "message": message}}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class StripeAPIServer:
    """The server on 127.0.0.1 and a free port, serving from a thread while open."""

    def __init__(self) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = _State()
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Recorded]:
        with self._httpd.state.lock:
            return list(self._httpd.state.requests)

    def fail_with(self, status: int, kind: str, message: str) -> None:
        """Answer every following request with this Stripe error."""
        self._httpd.state.error = (status, kind, message)

    def reset(self) -> None:
        self._httpd.state = _State()

    def __enter__(self) -> StripeAPIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[StripeAPIServer]:
    with StripeAPIServer() as server:
        yield server


@pytest.fixture
def stripe_api(stripe_server: StripeAPIServer, settings) -> Iterator[StripeAPIServer]:
    """Stripe switched on, with the SDK pointed at the loopback server, for one test."""
    stripe_server.reset()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_server.base_url
    yield stripe_server
    stripe_server.reset()
