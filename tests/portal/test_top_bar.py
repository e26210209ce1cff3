"""The top bar shows each member their own firm, marks the section they are in, and its
forms carry the request's own token and return to the page they were on (it is rendered
once for what it shows: portal.topbar)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from accounts.support import grant_create
from tests.factories import ClientFactory, FirmFactory, MembershipFactory, UserFactory


def _bar(http: HttpClient, url: str) -> str:
    body = http.get(url).content.decode()
    return body[body.index('<header class="topbar">') : body.index("</header>")]


def _current(bar: str) -> list[str]:
    return re.findall(r'aria-current="page">([^<]+)</a>', bar)


@pytest.mark.parametrize(
    ("url_name", "current"),
    [
        ("portal:client_list", ["Clients"]),
        ("invoicing:invoice_list", ["Invoices"]),
        ("mailsync:unlinked", ["Unlinked mail"]),
        ("troubleshooting:dashboard", []),
    ],
)
def test_the_bar_marks_the_section_the_member_is_in(owner_client, url_name, current):
    assert _current(_bar(owner_client, reverse(url_name))) == current


def test_a_clients_own_pages_are_in_the_clients_section(owner_client, firm):
    url = reverse("portal:client_detail", args=[ClientFactory(firm=firm).pk])
    assert _current(_bar(owner_client, url)) == ["Clients"]


def test_each_member_sees_their_own_firms_name(owner_client, db):
    other = MembershipFactory(firm=FirmFactory(name="Cedar <Tax> Partners"), role=Role.OWNER)
    other_client = HttpClient()
    other_client.force_login(other.user)

    assert "Alder &amp; Birch Accounting" in _bar(owner_client, reverse("portal:client_list"))
    theirs = _bar(other_client, reverse("portal:client_list"))
    assert "Cedar &lt;Tax&gt; Partners" in theirs
    assert "Alder" not in theirs


def test_the_language_form_returns_to_the_page_it_was_on(owner_client):
    bar = _bar(owner_client, reverse("portal:client_list") + '?q="<b>&page=2')
    assert 'name="next" type="hidden" value="/clients/?q=%22%3Cb%3E&amp;page=2"' in bar


def test_changing_the_language_posts_the_members_own_token(owner):
    http = HttpClient(enforce_csrf_checks=True)
    http.force_login(owner.user)
    _bar(http, reverse("portal:client_list"))  # another page's bar, kept for everyone
    bar = _bar(http, reverse("invoicing:invoice_list"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', bar).group(1)

    response = http.post(
        reverse("set_language"),
        {"language": "fi", "next": "/invoices/", "csrfmiddlewaretoken": token},
    )

    assert (response.status_code, response["Location"]) == (302, "/invoices/")
    assert "Laskut" in _bar(http, reverse("invoicing:invoice_list"))


def test_only_an_owner_sees_the_outbox_link(settings, owner_client, staff_client):
    settings.EMAIL_BACKEND = "portal.mail_outbox.OutboxBackend"
    assert "Outbox" in _bar(owner_client, reverse("portal:client_list"))
    assert "Outbox" not in _bar(staff_client, reverse("portal:client_list"))


def test_the_outbox_link_shows_only_where_mail_goes_to_the_outbox(owner_client):
    assert "Outbox" not in _bar(owner_client, reverse("portal:client_list"))


def test_support_inside_a_firm_sees_its_name_but_no_settings_link(owner_client, firm, owner):
    user = UserFactory(email="sam@support.test", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name="Support")[0])
    grant = grant_create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=1)
    )
    support = HttpClient()
    support.force_login(user)
    support.post(reverse("accounts:support_enter", args=[grant.pk]))

    bar = _bar(support, reverse("portal:client_list"))

    assert "Alder &amp; Birch Accounting" in bar
    assert "Settings" not in bar
    assert "Settings" in _bar(owner_client, reverse("portal:client_list"))


def test_a_visitor_sees_no_firm_and_no_sign_out(client, db):
    bar = _bar(client, reverse("account_login"))
    assert 'class="mainnav"' not in bar
    assert "Sign out" not in bar
