"""A problem card is rendered once for what it shows (troubleshooting.cards), yet each member
gets their own: their own CSRF token in its forms, the fixes they may use, their way back."""

from __future__ import annotations

import re
from html import unescape

from django.test import Client as HttpClient
from django.urls import reverse

from mailsync.models import MailboxConnection
from tests.mailsync.factories import MailboxConnectionFactory, fernet_key  # noqa: F401
from tests.troubleshooting import test_problem_pages
from troubleshooting.models import ProblemNote

DASHBOARD = reverse("troubleshooting:dashboard")
bounced_client = test_problem_pages.bounced_client


def _handled_form_token(page: str) -> str:
    form = page[page.index('class="handled-form"') :]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)


def test_a_cards_form_posts_with_the_token_of_the_member_who_opened_it(
    owner, staff, bounced_client
):
    tab = reverse("troubleshooting:client_problems", args=[bounced_client.pk])
    opened = []
    for membership in (owner, staff):  # the second sees the HTML made for the first
        http = HttpClient(enforce_csrf_checks=True)
        http.force_login(membership.user)
        opened.append((membership, http, http.get(tab).content.decode()))

    for membership, http, page in opened:
        response = http.post(
            reverse("troubleshooting:mark_handled"),
            {
                "code": "delivery.hard_bounce",
                "subject": re.search(r'name="subject" value="([^"]+)"', page).group(1),
                "note": f"Called them ({membership.role})",
                "next": tab,
                "csrfmiddlewaretoken": _handled_form_token(page),
            },
        )

        assert response.status_code == 302
    assert ProblemNote.objects.filter(firm=bounced_client.firm).count() == 2


def _failing_mailbox(firm, owner) -> MailboxConnection:
    return MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        email_address="anna.maple@alder.test",
        intent=MailboxConnection.Intent.ACTIVE,
        problem_code="sync.auth_failed",
        health="needs_reauth",
    )


def test_the_same_mailbox_card_offers_the_fix_only_to_the_mailbox_owner(
    owner_client, staff_client, firm, owner
):
    _failing_mailbox(firm, owner)

    for_owner = unescape(owner_client.get(DASHBOARD, {"kind": "sync"}).content.decode())
    for_staff = unescape(staff_client.get(DASHBOARD, {"kind": "sync"}).content.decode())

    assert ">Re-authenticate</a>" in for_owner
    assert ">Re-authenticate</a>" not in for_staff
    assert f"Only {owner.user} can fix this" in for_staff


def test_a_cards_forms_lead_back_to_the_page_they_were_on(owner_client, firm, owner):
    _failing_mailbox(firm, owner)

    for path in (DASHBOARD + "?kind=sync", DASHBOARD + f"?member={owner.user.pk}"):
        page = owner_client.get(path).content.decode()
        form = page[page.index('class="handled-form"') :]

        assert f'name="next" value="{path.replace("&", "&amp;")}"' in form
