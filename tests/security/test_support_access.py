"""Support can never keep or widen its access, and everything it does is on the owner's record."""

from __future__ import annotations

import secrets
from html import unescape

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.models import AuditEntry, Invitation, Membership, Role, SupportGrant, hash_token
from accounts.support import SESSION_GRANT_KEY, SupportAccessError, grant_create
from tests.factories import PASSWORD, ClientFactory, DocumentFactory
from tests.invoicing.factories import invoice_with_lines


def _audit_page(owner_client) -> str:
    return unescape(owner_client.get(reverse("accounts:audit_log")).content.decode())


def test_support_cannot_invite_itself_as_owner(support, support_user, firm):
    response = support.post(
        reverse("accounts:invite"), {"email": support_user.email, "role": Role.OWNER}
    )
    assert response.status_code == 403
    assert "Not allowed in a support session" in response.content.decode()
    assert not Invitation.objects.filter(firm=firm).exists()
    refused = AuditEntry.objects.get(kind="refused", view_name="accounts:invite")
    assert (refused.actor, refused.method, refused.status_code) == (support_user, "POST", 403)


def test_support_cannot_accept_an_invitation_inside_a_session(support, support_user, firm, owner):
    token = secrets.token_urlsafe(32)
    Invitation.objects.create(
        firm=firm,
        email=support_user.email,
        role=Role.OWNER,
        token_hash=hash_token(token),
        invited_by=owner.user,
        expires_at=timezone.now() + timezone.timedelta(days=3),
    )
    response = support.post(reverse("accounts:invitation_accept", args=[token]))
    assert response.status_code == 403
    assert not Membership.objects.filter(user=support_user).exists()


def test_support_cannot_demote_the_real_owner_through_the_role_form(support, owner):
    response = support.post(
        reverse("accounts:membership_role", args=[owner.pk]), {"role": Role.STAFF}
    )
    assert response.status_code == 403
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_support_cannot_extend_its_own_grant(support, grant):
    response = support.post(
        reverse("accounts:editor_access_save"),
        {"enabled": "on", "period": "date", "until": "2099-01-01"},
    )
    assert response.status_code == 403
    assert SupportGrant.objects.get() == grant
    grant.refresh_from_db()
    assert grant.revoked_at is None


def test_support_cannot_switch_the_firms_owner_mfa_off(support, firm):
    firm.owners_must_use_mfa = True
    firm.save()
    response = support.post(
        reverse("accounts:firm_profile"), {"name": firm.name, "owners_must_use_mfa": ""}
    )
    assert response.status_code == 403
    firm.refresh_from_db()
    assert firm.owners_must_use_mfa is True


def test_viewing_a_client_is_audited_for_the_owner(support, support_user, firm, owner_client):
    client = ClientFactory(firm=firm, display_name="Spruce Ltd")
    assert support.get(reverse("portal:client_detail", args=[client.pk])).status_code == 200
    entry = AuditEntry.objects.get(kind="viewed", view_name="portal:client_detail")
    assert (entry.actor, entry.method, entry.status_code) == (support_user, "GET", 200)
    assert entry.object_ref == f"client_pk={client.pk}"
    page = _audit_page(owner_client)
    assert "Page viewed by support" in page
    assert f"GET /clients/{client.pk}/" in page


def test_downloading_a_document_is_audited_for_the_owner(support, firm, owner_client):
    document = DocumentFactory(client=ClientFactory(firm=firm))
    url = reverse("portal:document_download", args=[document.client_id, document.pk])
    response = support.get(url)
    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert AuditEntry.objects.filter(kind="viewed", path=url, status_code=200).exists()
    assert f"GET {url}" in _audit_page(owner_client)


def test_printing_an_invoice_is_audited_for_the_owner(support, firm, owner_client):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm))
    url = reverse("invoicing:invoice_print", args=[invoice.pk])
    assert support.get(url).status_code == 200
    assert AuditEntry.objects.filter(kind="viewed", path=url).exists()
    assert f"GET {url}" in _audit_page(owner_client)


def test_a_page_reloaded_within_a_minute_is_recorded_once(support, firm):
    with freeze_time("2026-11-23 10:00:00") as clock:
        support.get(reverse("portal:client_list"))
        support.get(reverse("portal:client_list"))
        assert AuditEntry.objects.filter(kind="viewed").count() == 1
        clock.tick(61)
        support.get(reverse("portal:client_list"))
    assert AuditEntry.objects.filter(kind="viewed").count() == 2


def test_the_members_own_reads_are_not_audited(owner_client, firm):
    owner_client.get(reverse("portal:client_list"))
    assert not AuditEntry.objects.exists()


def test_signing_out_inside_a_support_session_works_and_is_audited(
    support, support_user, owner_client
):
    response = support.post(reverse("account_logout"))
    assert response.status_code == 302
    entry = AuditEntry.objects.get(kind="signed_out")
    assert (entry.actor, entry.method) == (support_user, "POST")
    assert SESSION_GRANT_KEY not in support.session
    assert "Support signed out" in _audit_page(owner_client)
    # Signed out for real: the firm's pages now ask to sign in.
    assert support.get(reverse("portal:client_list")).status_code == 302


@pytest.fixture
def reauthenticated_owner_client(owner_client):
    owner_client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    return owner_client


def test_editor_access_refuses_an_end_date_beyond_the_limit(reauthenticated_owner_client):
    with freeze_time("2026-11-23 10:00:00"):
        response = reauthenticated_owner_client.post(
            reverse("accounts:editor_access_save"),
            {"enabled": "on", "period": "date", "until": "9999-12-31"},
        )
    assert response.status_code == 400
    body = unescape(response.content.decode())
    assert "Editor access can last 365 days at most" in body
    assert "choose an end on or before Nov. 23, 2027" in body
    assert not SupportGrant.objects.exists()


def test_the_limit_is_a_setting(reauthenticated_owner_client, settings):
    settings.SUPPORT_ACCESS_MAX_DAYS = 30
    with freeze_time("2026-11-23 10:00:00"):
        refused = reauthenticated_owner_client.post(
            reverse("accounts:editor_access_save"), {"enabled": "on", "period": "3m"}
        )
        accepted = reauthenticated_owner_client.post(
            reverse("accounts:editor_access_save"),
            {"enabled": "on", "period": "date", "until": "2026-12-23"},
        )
    assert refused.status_code == 400
    assert "Editor access can last 30 days at most" in unescape(refused.content.decode())
    assert accepted.status_code == 302
    assert timezone.localdate(SupportGrant.objects.get().expires_at).isoformat() == "2026-12-23"


def test_the_service_refuses_a_grant_beyond_the_limit_too(firm, owner):
    with pytest.raises(SupportAccessError, match="too_long"):
        grant_create(
            firm=firm,
            granted_by=owner.user,
            expires_at=timezone.now() + timezone.timedelta(days=400),
        )


def test_the_support_user_out_of_a_session_is_not_audited(support_user, grant):
    http = HttpClient()
    http.force_login(support_user)
    http.get(reverse("accounts:support"))
    assert not AuditEntry.objects.exclude(kind="granted").exists()
