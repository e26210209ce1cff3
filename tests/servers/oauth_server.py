"""A loopback OAuth2 token endpoint standing in for Google's and Microsoft's.

Only the refresh grant (RFC 6749 §6) is implemented, because that is the only call the portal
makes itself (allauth's authorization-code exchange needs the real provider):

``POST /token`` with ``grant_type=refresh_token``, ``refresh_token``, ``client_id`` and
``client_secret`` answers ``{"access_token", "expires_in", "token_type", "scope",
"refresh_token"}`` with a NEW access token and a ROTATED refresh token (the old one stops
working, as Microsoft's may). A refresh token that was revoked, rotated away or never issued
gets ``400 {"error": "invalid_grant"}``; a wrong client gets ``401 invalid_client``.

The scopes granted are configurable per refresh token (``issue(..., scopes=...)``), to play a
member who unticked a permission on the consent screen. Every request is recorded.

Import the fixtures into a test module::

    from tests.servers.oauth_server import oauth_server, oauth_token_endpoint  # noqa: F401
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "OAuthTokenServer",
    "oauth_server",
    "oauth_token_endpoint",
]

HOST = "127.0.0.1"
CLIENT_ID = "portal-test-client"
CLIENT_SECRET = "portal-test-client-secret"


@dataclass
class _Grant:
    user: str
    scopes: tuple[str, ...]


@dataclass
class _State:
    # refresh token → the grant it stands for; rotation moves the grant to a new key.
    grants: dict[str, _Grant] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    # Access tokens handed out, with their user (tests register them with Dovecot).
    issued: list[tuple[str, str]] = field(default_factory=list)
    expires_in: int = 3600
    rotate: bool = True
    # Omit "scope" in the answer (RFC 6749 allows it when the scope did not change).
    omit_scope: bool = False
    # Called with (access token, user) as each is issued, e.g. Dovecot's add_oauth_token,
    # so the IMAP server accepts exactly the tokens this endpoint handed out.
    on_issue: Callable[[str, str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class OAuthTokenServer:
    """The token endpoint on a free loopback port; use as a context manager."""

    def __init__(self) -> None:
        self.state = _State()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, object]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                with state.lock:
                    state.requests.append(form)
                    if self.path.split("?")[0] != "/token":
                        self._answer(404, {"error": "not_found"})
                        return
                    if (form.get("client_id"), form.get("client_secret")) != (
                        CLIENT_ID,
                        CLIENT_SECRET,
                    ):
                        self._answer(401, {"error": "invalid_client"})
                        return
                    if form.get("grant_type") != "refresh_token":
                        self._answer(400, {"error": "unsupported_grant_type"})
                        return
                    old = form.get("refresh_token", "")
                    grant = state.grants.get(old)
                    if grant is None:
                        self._answer(
                            400,
                            {
                                "error": "invalid_grant",
                                "error_description": "Token has been expired or revoked.",
                            },
                        )
                        return
                    access = "at-" + secrets.token_urlsafe(24)
                    state.issued.append((access, grant.user))
                    if state.on_issue is not None:
                        state.on_issue(access, grant.user)
                    body: dict[str, object] = {
                        "access_token": access,
                        "expires_in": state.expires_in,
                        "token_type": "Bearer",
                    }
                    if not state.omit_scope:
                        body["scope"] = " ".join(grant.scopes)
                    if state.rotate:
                        new = "rt-" + secrets.token_urlsafe(24)
                        state.grants[new] = state.grants.pop(old)
                        body["refresh_token"] = new
                self._answer(200, body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.token_url = f"http://{HOST}:{self.server.server_address[1]}/token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- what tests set up and read --------------------------------------------------------

    def issue(self, user: str, *, scopes: tuple[str, ...] | list[str]) -> str:
        """A refresh token for ``user`` whose grant covers ``scopes``."""
        token = "rt-" + secrets.token_urlsafe(24)
        with self.state.lock:
            self.state.grants[token] = _Grant(user=user, scopes=tuple(scopes))
        return token

    def revoke(self, refresh_token: str) -> None:
        """The member removed the app's access (or the grant expired)."""
        with self.state.lock:
            self.state.grants.pop(refresh_token, None)

    def is_valid(self, refresh_token: str) -> bool:
        with self.state.lock:
            return refresh_token in self.state.grants

    @property
    def requests(self) -> list[dict[str, str]]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def issued(self) -> list[tuple[str, str]]:
        with self.state.lock:
            return list(self.state.issued)

    def reset(self) -> None:
        with self.state.lock:
            self.state.grants.clear()
            self.state.requests.clear()
            self.state.issued.clear()
            self.state.expires_in = 3600
            self.state.rotate = True
            self.state.omit_scope = False
            self.state.on_issue = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> OAuthTokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OAuthTokenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthTokenServer]:
    with OAuthTokenServer() as server:
        yield server


@pytest.fixture
def oauth_token_endpoint(oauth_server: OAuthTokenServer, settings) -> Iterator[OAuthTokenServer]:
    """The portal's Google and Microsoft token URLs and client credentials pointed at the
    loopback endpoint, for one test."""
    oauth_server.reset()
    settings.MAILSYNC_GOOGLE_TOKEN_URL = oauth_server.token_url
    settings.MAILSYNC_MICROSOFT_TOKEN_URL = oauth_server.token_url
    app = {"client_id": CLIENT_ID, "secret": CLIENT_SECRET, "key": ""}
    providers = {
        name: {**config, "APPS": [dict(app)]}
        for name, config in settings.SOCIALACCOUNT_PROVIDERS.items()
    }
    settings.SOCIALACCOUNT_PROVIDERS = providers
    yield oauth_server
    oauth_server.reset()
