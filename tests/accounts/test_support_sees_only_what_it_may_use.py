"""A support session is shown no button, form or link it would be refused."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client as HttpClient
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone

from accounts.support import grant_create, support_may_use
from portal.models import Firm

TARGET = re.compile(r'(href|action)="(/[^"#?]*)')


FOLLOWED = {"portal", "invoicing", "mailsync", "troubleshooting"}


def _view_name(path: str) -> str | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return match.view_name


@pytest.fixture
def support_inside(db, settings):
    settings.DEBUG = True
    call_command("seed_demo", clients=3)
    user_model = get_user_model()
    firm = Firm.objects.get(slug="demo-accounting")
    grant = grant_create(
        firm=firm,
        granted_by=user_model.objects.get(email="owner@demo.test"),
        expires_at=timezone.now() + timedelta(days=1),
    )
    http = HttpClient()
    http.force_login(user_model.objects.get(email="support@demo.test"))
    http.post(reverse("accounts:support_enter", args=[grant.pk]))
    return http


def test_no_page_support_can_open_offers_what_support_would_be_refused(support_inside):
    seen: set[str] = set()
    todo = [reverse("portal:home"), reverse("troubleshooting:dashboard")]
    offered: dict[str, set[str]] = {}
    while todo and len(seen) < 80:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = support_inside.get(path)
        if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
            continue
        for attribute, target in TARGET.findall(response.content.decode()):
            target = urlsplit(target).path
            name = _view_name(target)
            if name is None or name.startswith(("static", "admin:")):
                continue
            if support_may_use(name):
                if attribute == "href" and name.split(":")[0] in FOLLOWED:
                    todo.append(target)
            else:
                offered.setdefault(name, set()).add(path)
    assert len(seen) > 20  # the crawl reached clients, invoices, mail and problems
    assert offered == {}
