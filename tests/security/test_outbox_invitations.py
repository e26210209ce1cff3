"""An invitation is accepted only by a signed-in user who proved the invited address.

Whoever merely holds the link (it sat in a local outbox, a shared mailbox, a forwarded email)
can neither join by signing up under the invited address nor with an account whose copy of
that address was never confirmed.
"""

from __future__ import annotations

import re
import secrets

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from accounts.models import Invitation, Membership, Role, hash_token
from accounts.services import InvitationError, invitation_accept
from tests.factories import UserFactory

INVITED = "new.partner@alder.test"


@pytest.fixture
def token(firm, owner) -> str:
    token = secrets.token_urlsafe(32)
    Invitation.objects.create(
        firm=firm,
        email=INVITED,
        role=Role.OWNER,
        token_hash=hash_token(token),
        invited_by=owner.user,
        expires_at=timezone.now() + timezone.timedelta(days=3),
    )
    return token


def _link(token: str) -> str:
    return reverse("accounts:invitation_accept", args=[token])


def test_signing_up_under_the_invited_address_does_not_join(token, firm):
    http = HttpClient()
    response = http.post(
        _link(token),
        {"first_name": "Eve", "last_name": "Holder", "password": "a sturdy passphrase 42"},
    )
    assert response.status_code == 200
    assert not Membership.objects.filter(firm=firm, user__email=INVITED).exists()
    assert not EmailAddress.objects.get(email=INVITED).verified
    # The confirmation goes to the invited address, not to whoever held the link.
    assert mail.outbox[-1].to == [INVITED]
    assert http.get(reverse("portal:client_list")).status_code == 302  # not signed in


def test_the_account_created_from_the_link_cannot_sign_in_before_confirming(token):
    http = HttpClient()
    http.post(
        _link(token),
        {"first_name": "Eve", "last_name": "Holder", "password": "a sturdy passphrase 42"},
    )
    http.post(reverse("account_login"), {"login": INVITED, "password": "a sturdy passphrase 42"})
    response = http.post(_link(token))
    assert response.status_code == 200
    assert "Sign in, then you can accept the invitation" in response.content.decode()
    assert not Membership.objects.filter(user__email=INVITED).exists()


def test_a_signed_in_user_with_the_address_unconfirmed_is_asked_to_confirm_it(token, firm):
    user = UserFactory(email="someone@else.test")
    EmailAddress.objects.create(user=user, email=INVITED, verified=False)
    http = HttpClient()
    http.force_login(user)
    response = http.post(_link(token))
    assert response.status_code == 403
    assert f"We sent a confirmation link to {INVITED}" in response.content.decode()
    assert mail.outbox[-1].to == [INVITED]
    assert re.search(r"/accounts/confirm-email/\S+/", mail.outbox[-1].body)
    assert not Membership.objects.filter(user=user, firm=firm).exists()


def test_a_user_who_confirmed_the_address_on_their_account_joins(token, firm):
    user = UserFactory(email="someone@else.test")
    EmailAddress.objects.create(user=user, email=INVITED.upper(), verified=True)
    http = HttpClient()
    http.force_login(user)
    assert http.post(_link(token)).status_code == 302
    assert Membership.objects.get(user=user, firm=firm).role == Role.OWNER


def test_the_service_itself_refuses_an_unconfirmed_address(token, firm):
    user = UserFactory(email=INVITED)
    EmailAddress.objects.filter(user=user).update(verified=False)
    invitation = Invitation.objects.get()
    with pytest.raises(InvitationError, match="unverified"):
        invitation_accept(invitation=invitation, user=user)
    assert not Membership.objects.filter(user=user, firm=firm).exists()
