"""Pytest fixtures for the loopback Courier-IMAP/POP3 (see tests/servers/courier.py).

``courier`` is started once per session; ``courier_user`` is a fresh user for each test.
Where Courier cannot run (not root, packages not unpacked) the tests are skipped, or fail
when ``PORTAL_TEST_STRICT=1`` (CI).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.servers.courier import CourierServer
from tests.servers.dovecot_fixtures import require, running

__all__ = ["CourierUser", "courier", "courier_user"]

_counter = itertools.count(1)


@dataclass(frozen=True)
class CourierUser:
    name: str
    password: str
    server: CourierServer


@pytest.fixture(scope="session")
def courier() -> Iterator[CourierServer]:
    require(CourierServer.missing())
    with running(CourierServer, "portal-courier-") as server:
        yield server


@pytest.fixture
def courier_user(courier: CourierServer) -> CourierUser:
    name = f"c{os.getpid()}x{next(_counter)}"
    password = f"pw-{name}-secret"
    courier.add_user(name, password)
    return CourierUser(name=name, password=password, server=courier)
