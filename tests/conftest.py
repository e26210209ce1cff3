"""Fixtures shared by the whole suite: firms, their members, and an outsider."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client as HttpClient
from django.utils import translation
from hypothesis import settings as hypothesis_settings

from accounts.models import Membership, Role
from portal.models import Firm
from tests.factories import FirmFactory, MembershipFactory
from tests.servers.dns_fixtures import dns_server, dns_zone  # noqa: F401

# Property tests check outcomes, not speed: on a loaded CI machine one example can take longer
# than hypothesis's default 200 ms deadline, which would fail a correct run.
hypothesis_settings.register_profile("portal", deadline=None)
hypothesis_settings.load_profile("portal")


def pytest_configure(config):
    """Compile the catalogues before Django loads any translation (they are not committed)."""
    from scripts.compile_catalogues import main as compile_catalogues

    compile_catalogues()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """allauth's rate limits live in the cache; one test's sign-ups must not limit the next."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _english_by_default():
    """A request in another language leaves it active in the thread; start each test in English."""
    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _fresh_blob_store(settings, tmp_path):
    """Each test starts with an empty blob store (raw mail), as it starts with an empty
    database: a blob left by another test would make this one's writes "reuses"."""
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "portal.blobs.BlobFileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "blobs"), "base_url": None},
        },
    }
    yield


@pytest.fixture
def firm(db) -> Firm:
    return FirmFactory(name="Alder & Birch Accounting")


@pytest.fixture
def owner(firm) -> Membership:
    return MembershipFactory(firm=firm, role=Role.OWNER, user__email="owner@alder.test")


@pytest.fixture
def admin_member(firm) -> Membership:
    return MembershipFactory(firm=firm, role=Role.ADMIN, user__email="admin@alder.test")


@pytest.fixture
def staff(firm) -> Membership:
    return MembershipFactory(firm=firm, role=Role.STAFF, user__email="staff@alder.test")


@pytest.fixture
def outsider(db) -> Membership:
    """An owner of another firm: must never see or change anything of `firm`."""
    other = FirmFactory(name="Other Firm Ltd")
    return MembershipFactory(firm=other, role=Role.OWNER, user__email="owner@other.test")


def _signed_in(membership: Membership) -> HttpClient:
    http = HttpClient()
    http.force_login(membership.user)
    return http


@pytest.fixture
def owner_client(owner) -> HttpClient:
    return _signed_in(owner)


@pytest.fixture
def staff_client(staff) -> HttpClient:
    return _signed_in(staff)


@pytest.fixture
def outsider_client(outsider) -> HttpClient:
    return _signed_in(outsider)
