"""The firm a member's request acts for (accounts.selectors.membership_for_request)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import Role, User
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


def test_the_signed_in_user_read_by_key_is_the_row_the_orm_reads(db):
    user = UserFactory(language="fi")
    user.refresh_from_db()
    read = User.objects.get(pk=user.pk)
    orm = User.objects.filter(pk=user.pk).get()
    fields = [f.attname for f in User._meta.concrete_fields]
    assert [getattr(read, f) for f in fields] == [getattr(orm, f) for f in fields]
    assert read.last_login == orm.last_login and read.date_joined == orm.date_joined


def test_a_user_key_that_is_gone_raises_does_not_exist(db):
    with pytest.raises(User.DoesNotExist):
        User.objects.get(pk=987_654_321)


def test_a_deleted_user_is_signed_out(owner_client, owner):
    owner.user.delete()
    response = owner_client.get(reverse("portal:client_list"))
    assert response.status_code == 302
