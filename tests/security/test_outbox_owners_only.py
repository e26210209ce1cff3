"""The local outbox: only owners read it, and the links that are credentials are masked."""

from __future__ import annotations

import re
import secrets

import pytest
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.test import Client as HttpClient
from django.urls import reverse

from accounts.models import Invitation, Role
from accounts.services import invitation_create
from portal.mail_outbox import FIRM_HEADER, mask_links
from portal.models import OutboxEmail
from tests.factories import MembershipFactory


@pytest.fixture
def outbox_backend(settings):
    settings.EMAIL_BACKEND = "portal.mail_outbox.OutboxBackend"


@pytest.fixture
def invitation_mail(outbox_backend, firm, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        invitation_create(
            firm=firm, email="new.partner@alder.test", role=Role.OWNER, invited_by=owner.user
        )
    return OutboxEmail.objects.get(subject__contains="Alder")


def _pay_mail(firm) -> tuple[OutboxEmail, str]:
    token = secrets.token_urlsafe(32)
    link = settings.SITE_URL + reverse("invoicing:pay", args=[token])
    message = EmailMultiAlternatives(
        "Invoice 7",
        f"Pay here: {link}\nOr by card: {link}checkout/\n",
        "portal@x.test",
        ["client@x.test"],
        headers={FIRM_HEADER: str(firm.pk), "List-Help": f"<{link}>"},
    )
    message.attach_alternative(f'<p><a href="{link}">Pay now</a></p>', "text/html")
    message.send()
    return OutboxEmail.objects.get(subject="Invoice 7"), token


def _as(membership) -> HttpClient:
    http = HttpClient()
    http.force_login(membership.user)
    return http


@pytest.mark.parametrize("role", [Role.STAFF, Role.ADMIN])
def test_members_who_are_not_owners_cannot_open_the_outbox(invitation_mail, firm, role):
    http = _as(MembershipFactory(firm=firm, role=role))
    assert http.get(reverse("portal:outbox")).status_code == 403
    response = http.get(reverse("portal:outbox_detail", args=[invitation_mail.pk]))
    assert response.status_code == 403
    assert "/invitations/" not in response.content.decode()


def test_the_outbox_link_is_shown_to_owners_only(outbox_backend, owner_client, staff_client):
    assert (
        reverse("portal:outbox") in owner_client.get(reverse("portal:client_list")).content.decode()
    )
    assert (
        reverse("portal:outbox")
        not in staff_client.get(reverse("portal:client_list")).content.decode()
    )


def test_a_signed_in_user_without_a_firm_cannot_open_the_outbox(outbox_backend, db):
    from tests.factories import UserFactory

    http = HttpClient()
    http.force_login(UserFactory())
    assert http.get(reverse("portal:outbox")).status_code == 403


def test_an_owner_sees_that_an_invitation_link_was_sent_but_not_the_link(
    invitation_mail, owner_client
):
    response = owner_client.get(reverse("portal:outbox_detail", args=[invitation_mail.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "[invitation link hidden]" in body
    assert "/invitations/" not in body
    token = re.search(rb"/invitations/([\w-]+)/", bytes(invitation_mail.raw))
    assert token is not None and token[1].decode() not in body
    assert Invitation.objects.get().is_usable


def test_an_owner_sees_that_a_pay_now_link_was_sent_but_not_the_link(
    outbox_backend, owner_client, firm
):
    email, token = _pay_mail(firm)
    url = reverse("portal:outbox_detail", args=[email.pk])
    text = owner_client.get(url, {"format": "text"}).content.decode()
    assert text.count("[Pay Now link hidden]") == 3  # two in the text, one in a header
    # The formatted view (the HTML part in its frame) hides the link the same way.
    framed = owner_client.get(url).content.decode()
    for body in (text, framed):
        assert token not in body
        assert "/pay/" not in body


def test_masking_keeps_the_text_around_the_links():
    token = secrets.token_urlsafe(32)
    text = (
        f"Join: https://portal.example.com/invitations/{token}/ today.\n"
        f'<a href="/pay/{token}/new-link/">new link</a> and /pay/{token}/checkout/'
    )
    assert mask_links(text) == (
        "Join: [invitation link hidden] today.\n"
        '<a href="[Pay Now link hidden]">new link</a> and [Pay Now link hidden]'
    )


def test_masking_leaves_other_links_alone():
    text = "See https://portal.example.com/invoices/7/ and https://example.com/pay-info/"
    assert mask_links(text) == text
