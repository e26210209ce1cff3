"""Pytest fixtures for the loopback Dovecot (IMAP + POP3).

Import them into a conftest.py::

    from tests.servers.dovecot_fixtures import dovecot, mailbox_user  # noqa: F401

``dovecot`` is started once per session (plain IMAP/POP3 plus implicit TLS and STARTTLS with
a self-signed certificate, and XOAUTH2); ``mailbox_user`` is a fresh user for each test, so
tests never see each other's mail. Without the ``dovecot`` binary the tests are skipped, or
fail when ``PORTAL_TEST_STRICT=1`` (CI).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from tests.servers.dovecot import DovecotServer

__all__ = ["MailboxUser", "dovecot", "mailbox_user", "require", "running"]

_counter = itertools.count(1)
S = TypeVar("S", bound=Any)


@dataclass(frozen=True)
class MailboxUser:
    name: str
    password: str
    server: DovecotServer


def require(missing: str | None) -> None:
    """Skip the test when a component is missing, or fail it under PORTAL_TEST_STRICT=1
    (CI), where a missing component is never a silent skip."""
    if missing is None:
        return
    if os.environ.get("PORTAL_TEST_STRICT") == "1":
        pytest.fail(missing)
    pytest.skip(missing)


@contextmanager
def running(server_type: Callable[[str], S], prefix: str) -> Iterator[S]:
    """A server started in a run folder of its own, stopped and removed afterwards.

    Not pytest's tmp_path: its parent is private to the user running the tests (0700), and
    the servers' mail processes run as another user that must reach the Maildirs."""
    run_dir = tempfile.mkdtemp(prefix=prefix)
    server = server_type(run_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    require(
        None
        if DovecotServer.available()
        else "dovecot/doveadm are missing: apt-get install dovecot-imapd dovecot-pop3d "
        "(the mailbox adapter tests need a real IMAP/POP3 server)"
    )
    with running(
        lambda run_dir: DovecotServer(run_dir, tls=True, oauth2=True), "portal-dovecot-"
    ) as server:
        yield server


@pytest.fixture
def mailbox_user(dovecot: DovecotServer) -> MailboxUser:
    name = f"user{os.getpid()}x{next(_counter)}"
    password = f"pw-{name}-secret"
    dovecot.add_user(name, password)
    return MailboxUser(name=name, password=password, server=dovecot)
