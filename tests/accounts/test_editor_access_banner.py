"""While Editor access is on, the firm's owners see it on every page, with its end."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from accounts.support import grant_create, grant_revoke

BANNER = "The support team may enter this firm until"


def _grant(firm, owner):
    return grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timedelta(days=7)
    )


def test_the_owner_sees_that_support_may_enter_and_until_when(firm, owner, owner_client):
    grant = _grant(firm, owner)
    body = owner_client.get(reverse("portal:client_list")).content.decode()
    assert BANNER in body
    assert str(timezone.localtime(grant.expires_at).year) in body
    assert reverse("accounts:editor_access") in body


def test_no_banner_while_editor_access_is_off(owner_client):
    body = owner_client.get(reverse("portal:client_list")).content.decode()
    assert BANNER not in body


def test_the_banner_goes_once_access_is_revoked(firm, owner, owner_client):
    grant_revoke(grant=_grant(firm, owner), revoked_by=owner.user)
    body = owner_client.get(reverse("portal:client_list")).content.decode()
    assert BANNER not in body


def test_staff_are_not_shown_the_owners_banner(firm, owner, staff_client):
    _grant(firm, owner)
    body = staff_client.get(reverse("portal:client_list")).content.decode()
    assert BANNER not in body
