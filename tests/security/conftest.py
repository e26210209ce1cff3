"""Fixtures of the security tests: the support team and a session inside a firm."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from accounts.models import SupportGrant, User
from accounts.support import grant_create
from tests.factories import UserFactory


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
