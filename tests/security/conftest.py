"""Fixtures shared by the security tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

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
