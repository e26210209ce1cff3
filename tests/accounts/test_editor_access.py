"""Firm Settings → Editor access: owners switch support access on and off."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.models import AuditEntry, SupportGrant
from accounts.support import grant_create
from tests.factories import PASSWORD


@pytest.fixture
def reauthenticated_owner_client(owner_client):
    owner_client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    return owner_client


def _save(http, **data):
    return http.post(reverse("accounts:editor_access_save"), {"period": "1m", **data})


def test_the_page_offers_the_toggle_with_one_month_preselected(owner_client):
    body = owner_client.get(reverse("accounts:editor_access")).content.decode()
    assert "Allow the support team to log in with owner permissions" in body
    assert re.search(r'value="1m"[^>]*checked', body)
    assert "Editor access is off." in body


def test_saving_asks_for_the_password_again_when_not_recently_signed_in(owner_client):
    response = _save(owner_client, enabled="on")
    assert response.status_code == 302
    assert reverse("account_reauthenticate") in response["Location"]
    assert not SupportGrant.objects.exists()


def test_switching_it_on_grants_one_month_by_default(reauthenticated_owner_client, owner):
    with freeze_time("2026-11-23 10:00:00"):
        _save(reauthenticated_owner_client, enabled="on")
    grant = SupportGrant.objects.get()
    assert grant.granted_by == owner.user
    assert grant.expires_at == datetime(2026, 12, 23, 10, 0, tzinfo=UTC)
    assert AuditEntry.objects.filter(kind="granted", actor=owner.user).exists()


@pytest.mark.parametrize(("period", "days"), [("1d", 1), ("1w", 7), ("3m", 91)])
def test_a_shorter_or_longer_preset_can_be_chosen(reauthenticated_owner_client, period, days):
    with freeze_time("2026-11-23 10:00:00"):
        _save(reauthenticated_owner_client, enabled="on", period=period)
        grant = SupportGrant.objects.get()
        assert grant.expires_at - timezone.now() == timezone.timedelta(days=days)


def test_access_can_run_until_the_end_of_a_chosen_date(reauthenticated_owner_client):
    with freeze_time("2026-11-23 10:00:00"):
        _save(reauthenticated_owner_client, enabled="on", period="date", until="2027-01-15")
    expires = timezone.localtime(SupportGrant.objects.get().expires_at)
    assert (expires.date().isoformat(), expires.hour, expires.minute) == ("2027-01-15", 23, 59)


def test_a_date_in_the_past_is_refused(reauthenticated_owner_client):
    with freeze_time("2026-11-23 10:00:00"):
        response = _save(
            reauthenticated_owner_client, enabled="on", period="date", until="2026-11-01"
        )
    assert response.status_code == 400
    assert "has not passed" in response.content.decode()
    assert not SupportGrant.objects.exists()


def test_the_page_shows_who_granted_access_and_when_it_ends(owner_client, owner, firm):
    grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=2)
    )
    body = owner_client.get(reverse("accounts:editor_access")).content.decode()
    assert "Editor access is on: granted by" in body
    assert str(owner.user) in body


def test_revoke_ends_access_at_once(owner_client, owner, firm):
    grant = grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=2)
    )
    owner_client.post(reverse("accounts:editor_access_revoke"))
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    assert AuditEntry.objects.filter(kind="revoked").exists()


def test_switching_it_off_revokes_the_grant(reauthenticated_owner_client, owner, firm):
    grant = grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=2)
    )
    _save(reauthenticated_owner_client)  # the toggle unticked
    grant.refresh_from_db()
    assert grant.revoked_at is not None


def test_granting_again_replaces_the_current_grant(reauthenticated_owner_client):
    _save(reauthenticated_owner_client, enabled="on", period="1d")
    _save(reauthenticated_owner_client, enabled="on", period="1w")
    first, second = SupportGrant.objects.order_by("created")
    assert first.revoked_at is not None
    assert second.is_active()


def test_admins_see_the_state_but_cannot_change_it(admin_member, owner, firm, client):
    client.force_login(admin_member.user)
    body = client.get(reverse("accounts:editor_access")).content.decode()
    assert "Only an owner can change editor access." in body
    assert client.post(reverse("accounts:editor_access_revoke")).status_code == 403


def test_staff_members_cannot_open_it(staff_client):
    assert staff_client.get(reverse("accounts:editor_access")).status_code == 403


def test_owners_are_emailed_when_access_is_granted(owner, firm, django_capture_on_commit_callbacks):
    owner.user.language = "fi"
    owner.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        grant_create(
            firm=firm,
            granted_by=owner.user,
            expires_at=timezone.now() + timezone.timedelta(days=2),
        )
    message = mail.outbox[-1]
    assert message.to == [owner.user.email]
    assert "/settings/firm/editor-access/" in message.body


def test_owners_see_the_audit_log(owner_client, owner, firm):
    grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=2)
    )
    body = owner_client.get(reverse("accounts:audit_log")).content.decode()
    assert "Access granted" in body
