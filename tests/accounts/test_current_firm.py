"""The firm a member's request acts for (accounts.selectors.membership_for_request)."""

from __future__ import annotations

from django.urls import reverse

from accounts.models import Role
from accounts.selectors import SESSION_FIRM_KEY
from tests.factories import MembershipFactory, UserFactory


def _current_firm(client):
    return client.get(reverse("portal:client_list")).context["current_firm"]


def test_a_member_of_two_firms_acts_for_the_one_they_joined_first(owner_client, owner):
    MembershipFactory(user=owner.user, role=Role.STAFF)
    assert _current_firm(owner_client) == owner.firm


def test_the_firm_the_session_picked_is_the_one_acted_for(owner_client, owner):
    other = MembershipFactory(user=owner.user, role=Role.STAFF)
    session = owner_client.session
    session[SESSION_FIRM_KEY] = other.firm_id
    session.save()
    response = owner_client.get(reverse("portal:client_list"))
    assert response.context["current_firm"] == other.firm
    assert response.wsgi_request.member_role == Role.STAFF


def test_a_firm_the_member_has_left_falls_back_to_their_first(owner_client, owner):
    other = MembershipFactory(user=owner.user, role=Role.STAFF)
    session = owner_client.session
    session[SESSION_FIRM_KEY] = other.firm_id
    session.save()
    other.delete()
    assert _current_firm(owner_client) == owner.firm


def test_a_user_without_a_firm_acts_for_none(db, client):
    client.force_login(UserFactory())
    response = client.get(reverse("accounts:my_account"))
    assert response.wsgi_request.firm is None
