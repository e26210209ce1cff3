from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Membership
from portal.models import Client, ContactAddress, Document


def test_it_creates_the_demo_firm_people_and_fifty_clients(db, settings):
    settings.DEBUG = True
    call_command("seed_demo")
    assert Client.objects.count() == 50
    assert Membership.objects.count() == 3
    assert ContactAddress.objects.filter(is_primary=True).count() >= 50
    assert Document.objects.count() == 5


def test_running_it_twice_changes_nothing(db, settings):
    settings.DEBUG = True
    call_command("seed_demo")
    call_command("seed_demo")
    assert Client.objects.count() == 50
    assert Membership.objects.count() == 3


def test_it_refuses_to_run_in_production(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")


def test_the_demo_owner_can_sign_in_and_open_a_client(db, settings, client):
    settings.DEBUG = True
    call_command("seed_demo")
    client.post("/accounts/login/", {"login": "owner@demo.test", "password": "demo-portal-2026"})
    first = Client.objects.order_by("display_name").first()
    response = client.get(first.get_absolute_url())
    assert first.display_name in response.content.decode()
