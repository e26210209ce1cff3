"""Support staff inside a firm: only while the grant lasts, audited, with limits."""

from __future__ import annotations

from html import unescape

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.models import AuditEntry, Membership, SupportGrant
from accounts.support import grant_create, grant_revoke, grants_expired_notify
from portal.models import Client
from tests.factories import ClientFactory, FirmFactory, MembershipFactory, UserFactory

START = "2026-11-23 10:00:00"


@pytest.fixture
def support_user(db):
    user = UserFactory(email="sam@support.test", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name="Support")[0])
    return user


@pytest.fixture
def support(support_user) -> HttpClient:
    http = HttpClient()
    http.force_login(support_user)
    return http


@pytest.fixture
def grant(firm, owner):
    with freeze_time(START):
        return grant_create(
            firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=1)
        )


def _enter(http, grant):
    return http.post(reverse("accounts:support_enter", args=[grant.pk]))


def test_support_sees_the_firms_that_allow_them_in(support, grant):
    with freeze_time(START):
        body = unescape(support.get(reverse("accounts:support")).content.decode())
    assert grant.firm.name in body
    assert "Enter firm" in body


def test_entering_gives_owner_permissions_inside_that_firm(support, grant, firm):
    ClientFactory(firm=firm, display_name="Granting Firm Client")
    with freeze_time(START):
        _enter(support, grant)
        response = support.get(reverse("portal:client_list"))
    assert "Granting Firm Client" in response.content.decode()
    assert response.context["member_role"] == "owner"


def test_a_banner_names_the_firm_and_the_end_of_the_session(support, grant, firm):
    with freeze_time(START):
        _enter(support, grant)
        body = unescape(support.get(reverse("portal:client_list")).content.decode())
    assert f"Support session in {firm.name} until" in body
    assert reverse("accounts:support_exit") in body


def test_the_request_at_the_moment_of_expiry_is_refused(support, grant):
    with freeze_time(START):
        _enter(support, grant)
    with freeze_time(grant.expires_at - timezone.timedelta(microseconds=1)):
        assert support.get(reverse("portal:client_list")).status_code == 200
    with freeze_time(grant.expires_at):
        response = support.get(reverse("portal:client_list"))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:support")
    with freeze_time(grant.expires_at):
        body = unescape(support.get(reverse("accounts:support")).content.decode())
    assert "Your support session ended" in body


def test_revoking_ends_a_session_in_progress(support, grant, owner):
    with freeze_time(START):
        _enter(support, grant)
        assert support.get(reverse("portal:client_list")).status_code == 200
        grant_revoke(grant=grant, revoked_by=owner.user)
        response = support.post(
            reverse("portal:client_create"),
            {"display_name": "Late", "kind": "company", "status": "active"},
        )
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:support")
    assert not Client.objects.filter(display_name="Late").exists()


@pytest.mark.parametrize(
    ("url_name", "args"),
    [
        ("accounts:editor_access_save", []),
        ("accounts:editor_access_revoke", []),
        ("accounts:membership_role", ["owner_membership"]),
        ("accounts:membership_remove", ["owner_membership"]),
        ("mailsync:credentials", []),
    ],
)
def test_forbidden_actions_are_refused_and_audited(support, grant, owner, url_name, args):
    values = {"owner_membership": owner.pk}
    with freeze_time(START):
        _enter(support, grant)
        response = support.post(
            reverse(url_name, args=[values[a] for a in args]),
            {"role": "staff", "enabled": "", "period": "1m"},
        )
    assert response.status_code == 403
    grant.refresh_from_db()
    owner.refresh_from_db()
    assert grant.revoked_at is None
    assert owner.role == "owner"
    assert AuditEntry.objects.filter(kind="refused", view_name=url_name).exists()


def test_every_change_made_by_support_is_audited(support, grant, firm, support_user):
    with freeze_time(START):
        _enter(support, grant)
        support.post(
            reverse("portal:client_create"),
            {"display_name": "Made by support", "kind": "company", "status": "active"},
        )
        support.get(reverse("portal:client_list"))
    entry = AuditEntry.objects.get(kind="request")
    assert (entry.actor, entry.method, entry.path) == (support_user, "POST", "/clients/new/")
    assert entry.status_code == 302
    assert AuditEntry.objects.filter(kind="entered", actor=support_user).exists()


def test_support_staff_land_on_the_firms_that_let_them_in(support):
    response = support.get(reverse("portal:home"))
    assert response["Location"] == reverse("accounts:support")


def test_entry_and_exit_are_audited(support, grant, support_user):
    with freeze_time(START):
        _enter(support, grant)
        support.post(reverse("accounts:support_exit"))
        response = support.get(reverse("portal:client_list"))
    assert AuditEntry.objects.filter(kind="exited", actor=support_user).exists()
    assert response.status_code == 403  # back to a staff user with no firm


def test_owners_are_told_when_support_first_enters(
    support, grant, owner, django_capture_on_commit_callbacks
):
    with freeze_time(START), django_capture_on_commit_callbacks(execute=True):
        _enter(support, grant)
        _enter(support, grant)
    first_used = [m for m in mail.outbox if "signed in to" in m.subject]
    assert len(first_used) == 1
    assert first_used[0].to == [owner.user.email]


def test_owners_are_told_once_when_access_expires(grant, owner, django_capture_on_commit_callbacks):
    mail.outbox.clear()
    with freeze_time(grant.expires_at), django_capture_on_commit_callbacks(execute=True):
        assert grants_expired_notify() == 1
        assert grants_expired_notify() == 0
    assert [m.to for m in mail.outbox] == [[owner.user.email]]
    assert "has ended" in mail.outbox[0].subject
    assert AuditEntry.objects.filter(kind="expired").count() == 1


def test_a_staff_user_outside_the_support_team_cannot_enter(grant, db):
    http = HttpClient()
    http.force_login(UserFactory(is_staff=True))
    with freeze_time(START):
        assert _enter(http, grant).status_code == 403
        assert http.get(reverse("portal:client_list")).status_code == 403


def test_a_member_of_another_firm_cannot_enter(grant, outsider_client):
    with freeze_time(START):
        assert _enter(outsider_client, grant).status_code == 403


def test_an_expired_grant_cannot_be_entered(support, grant):
    with freeze_time(grant.expires_at + timezone.timedelta(seconds=1)):
        response = _enter(support, grant)
    assert response["Location"] == reverse("accounts:support")
    assert not AuditEntry.objects.filter(kind="entered").exists()


def test_two_firms_granting_at_once_are_entered_one_at_a_time(support, grant, firm):
    other_firm = FirmFactory(name="Second Firm")
    other_owner = MembershipFactory(firm=other_firm, role="owner")
    ClientFactory(firm=firm, display_name="First Firm Client")
    ClientFactory(firm=other_firm, display_name="Second Firm Client")
    with freeze_time(START):
        other = grant_create(
            firm=other_firm,
            granted_by=other_owner.user,
            expires_at=timezone.now() + timezone.timedelta(days=1),
        )
        body = unescape(support.get(reverse("accounts:support")).content.decode())
        assert firm.name in body and "Second Firm" in body
        _enter(support, grant)
        body = unescape(support.get(reverse("portal:client_list")).content.decode())
        assert "First Firm Client" in body and "Second Firm Client" not in body
        _enter(support, other)
        body = unescape(support.get(reverse("portal:client_list")).content.decode())
        assert "Second Firm Client" in body and "First Firm Client" not in body
    assert SupportGrant.objects.filter(revoked_at=None).count() == 2
    assert not Membership.objects.filter(user__email="sam@support.test").exists()
