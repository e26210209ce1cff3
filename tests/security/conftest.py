"""Fixtures shared by the security tests: the support team inside a firm, and a loopback
service with a banner that must never be shown to a member."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from accounts.models import SupportGrant, User
from accounts.support import grant_create
from tests.factories import UserFactory
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.servers import dovecot_fixtures

dovecot = dovecot_fixtures.dovecot
mailbox_user = dovecot_fixtures.mailbox_user

# What a service on the portal's own network might say first: never to be shown to a member.
BANNER = b"SSH-2.0-OpenSSH_9.2p1 internal-build-7731 secret-banner\r\n"


class BannerServer:
    """A TCP service on loopback that greets with ``BANNER`` and counts the connections it
    accepted, so a test can prove the portal never even connected."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                conn.sendall(BANNER)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def banner_server() -> Iterator[BannerServer]:
    server = BannerServer()
    yield server
    server.close()


@pytest.fixture
def private_hosts_refused(settings) -> None:
    """The production default: the suite's settings allow loopback for its test servers."""
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = False


@pytest.fixture
def support_user(db) -> User:
    user = UserFactory(email="sam@support.test", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name="Support")[0])
    return user


@pytest.fixture
def grant(firm, owner) -> SupportGrant:
    return grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=1)
    )


def enter(http: HttpClient, user: User, grant: SupportGrant) -> HttpClient:
    """Sign `user` in and open a support session in the grant's firm."""
    http.force_login(user)
    response = http.post(reverse("accounts:support_enter", args=[grant.pk]))
    assert response.status_code == 302, response
    return http


@pytest.fixture
def support(support_user, grant) -> HttpClient:
    """The support team inside `firm`, under its owner's grant."""
    return enter(HttpClient(), support_user, grant)
