"""Owners and admins invite members by email, with a role."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts.models import Invitation, Membership, Role
from tests.factories import MembershipFactory


def _invite(http, email="new.member@alder.test", role="staff", captured=None):
    return http.post(reverse("accounts:invite"), {"email": email, "role": role})


def _link(message) -> str:
    return re.search(r"http://\S+/invitations/\S+/", message.body).group(0)


def test_an_owner_invites_a_member_by_email(owner_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client)
    invitation = Invitation.objects.get()
    assert invitation.role == Role.STAFF
    assert mail.outbox[-1].to == ["new.member@alder.test"]
    assert "Alder & Birch Accounting" in mail.outbox[-1].subject
    assert invitation.token_hash not in mail.outbox[-1].body


def test_the_invitation_email_has_text_and_html_parts(
    owner_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client)
    message = mail.outbox[-1]
    assert message.alternatives[0].mimetype == "text/html"
    assert _link(message) in message.alternatives[0].content


def test_staff_cannot_invite(staff_client):
    response = _invite(staff_client)
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_an_admin_cannot_invite_an_owner(admin_member, django_capture_on_commit_callbacks):
    from django.test import Client

    http = Client()
    http.force_login(admin_member.user)
    _invite(http, role="owner")
    assert not Invitation.objects.exists()


def test_an_invited_person_creates_an_account_confirms_the_address_and_joins(
    owner_client, client, firm, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client, role="admin")
    link = _link(mail.outbox[-1])
    response = client.post(
        link, {"first_name": "Ola", "last_name": "Nordmann", "password": "a sturdy passphrase 42"}
    )
    assert response.status_code == 200
    assert "We sent a confirmation link to new.member@alder.test" in response.content.decode()
    assert not Membership.objects.filter(user__email="new.member@alder.test").exists()
    confirm = re.search(r"http://\S+(/accounts/confirm-email/\S+/)", mail.outbox[-1].body)[1]
    assert mail.outbox[-1].to == ["new.member@alder.test"]
    client.post(confirm)
    client.post(
        reverse("account_login"),
        {"login": "new.member@alder.test", "password": "a sturdy passphrase 42"},
    )
    assert client.post(link).status_code == 302
    membership = Membership.objects.get(user__email="new.member@alder.test")
    assert (membership.firm, membership.role) == (firm, Role.ADMIN)
    assert client.get(reverse("portal:client_list")).status_code == 200


def test_an_existing_user_signs_in_then_accepts(
    owner_client, outsider, firm, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client, email=outsider.user.email)
    link = _link(mail.outbox[-1])
    from django.test import Client

    http = Client()
    assert "Sign in" in http.get(link).content.decode()
    http.force_login(outsider.user)
    http.post(link)
    assert Membership.objects.filter(user=outsider.user, firm=firm).exists()


def test_an_invitation_for_someone_else_is_refused(
    owner_client, outsider_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client, email="somebody@else.test")
    response = outsider_client.post(_link(mail.outbox[-1]))
    assert response.status_code == 403
    assert not Membership.objects.filter(user__email="somebody@else.test").exists()


@pytest.mark.parametrize("state", ["expired", "revoked", "accepted"])
def test_a_spent_invitation_link_explains_itself(
    owner_client, client, state, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client)
    invitation = Invitation.objects.get()
    field = {"expired": "expires_at", "revoked": "revoked_at", "accepted": "accepted_at"}[state]
    setattr(invitation, field, timezone.now() - timezone.timedelta(seconds=1))
    invitation.save()
    response = client.get(_link(mail.outbox[-1]))
    assert response.status_code == 410
    assert "can no longer be used" in response.content.decode()


def test_inviting_again_replaces_the_old_link(owner_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(owner_client)
        _invite(owner_client)
    first, second = Invitation.objects.order_by("created")
    assert first.revoked_at is not None
    assert second.is_usable


def test_a_member_cannot_be_invited_twice(owner_client, staff):
    _invite(owner_client, email=staff.user.email)
    assert not Invitation.objects.exists()


def test_the_last_owner_cannot_be_demoted(owner_client, owner):
    owner_client.post(reverse("accounts:membership_role", args=[owner.pk]), {"role": "staff"})
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_an_owner_changes_a_members_role_and_removes_them(owner_client, staff):
    owner_client.post(reverse("accounts:membership_role", args=[staff.pk]), {"role": "admin"})
    staff.refresh_from_db()
    assert staff.role == Role.ADMIN
    owner_client.post(reverse("accounts:membership_remove", args=[staff.pk]))
    assert not Membership.objects.filter(pk=staff.pk).exists()


def test_staff_see_the_members_but_cannot_change_them(staff_client, owner):
    response = staff_client.get(reverse("accounts:members"))
    assert owner.user.email in response.content.decode()
    assert "Send invitation" not in response.content.decode()
    response = staff_client.post(reverse("accounts:membership_remove", args=[owner.pk]))
    assert response.status_code == 403


def test_a_member_of_two_firms_can_switch(owner_client, owner):
    other = MembershipFactory(user=owner.user, role=Role.STAFF)
    owner_client.post(reverse("accounts:switch_firm", args=[other.pk]))
    response = owner_client.get(reverse("portal:client_list"))
    assert response.context["current_firm"] == other.firm
