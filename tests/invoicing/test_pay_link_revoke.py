"""Revoking a Pay Now link from the delivery timeline, and earlier copies after a resend."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.urls import reverse

from accounts.models import AuditEntry
from invoicing.delivery.models import Delivery
from invoicing.models import PayLink
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

pytestmark = pytest.mark.usefixtures("tasks_run_inline")

PAY_LINK = re.compile(r"http://testserver/pay/([A-Za-z0-9_-]{43})/")


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"


def _sent_invoice(http, firm, capture):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")
    invoice = invoice_with_lines(client=client)
    with capture(execute=True):
        http.post(reverse("invoicing:invoice_send", args=[invoice.pk]))
    return invoice


def _tokens(smtp) -> list[str]:
    return [
        PAY_LINK.search(r.message.get_body(("plain",)).get_content()).group(1)
        for r in smtp.received
    ]


def _revoke(http, invoice, delivery):
    return http.post(reverse("invoicing:pay_link_revoke", args=[invoice.pk, delivery.pk]))


def _asks_for_a_new_link(response, token) -> bool:
    body = unescape(response.content.decode())
    return (
        response.status_code == 410
        and "no longer valid" in body
        and reverse("invoicing:pay_link_request", args=[token]) in body
    )


def test_an_owner_revokes_a_link_from_the_timeline_and_it_asks_for_a_new_one(
    owner_client, owner, firm, smtp, client, django_capture_on_commit_callbacks
):
    invoice = _sent_invoice(owner_client, firm, django_capture_on_commit_callbacks)
    (token,) = _tokens(smtp)
    assert client.get(reverse("invoicing:pay", args=[token])).status_code == 200
    delivery = Delivery.objects.get()
    page = owner_client.get(reverse("invoicing:invoice_detail", args=[invoice.pk])).content
    assert b"Revoke Pay Now link" in page

    response = _revoke(owner_client, invoice, delivery)

    assert response.status_code == 302
    assert _asks_for_a_new_link(client.get(reverse("invoicing:pay", args=[token])), token)
    entry = AuditEntry.objects.get(kind=AuditEntry.Kind.PAY_LINK_REVOKED)
    assert (entry.firm, entry.actor) == (firm, owner.user)
    assert "anna@client.test" in entry.object_ref
    page = owner_client.get(reverse("invoicing:invoice_detail", args=[invoice.pk])).content
    assert b"Pay Now link revoked" in page and b"Revoke Pay Now link" not in page


def test_revoking_twice_audits_once(owner_client, firm, smtp, django_capture_on_commit_callbacks):
    invoice = _sent_invoice(owner_client, firm, django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()

    _revoke(owner_client, invoice, delivery)
    _revoke(owner_client, invoice, delivery)

    assert AuditEntry.objects.filter(kind=AuditEntry.Kind.PAY_LINK_REVOKED).count() == 1


def test_staff_see_no_revoke_button_and_are_refused(
    owner_client, staff_client, firm, smtp, client, django_capture_on_commit_callbacks
):
    invoice = _sent_invoice(owner_client, firm, django_capture_on_commit_callbacks)
    (token,) = _tokens(smtp)
    delivery = Delivery.objects.get()
    page = staff_client.get(reverse("invoicing:invoice_detail", args=[invoice.pk])).content
    assert b"Revoke Pay Now link" not in page

    assert _revoke(staff_client, invoice, delivery).status_code == 403
    assert PayLink.objects.get().revoked_at is None
    assert client.get(reverse("invoicing:pay", args=[token])).status_code == 200


def test_after_a_resend_the_earlier_copys_link_asks_for_a_new_link_not_not_found(
    owner_client, firm, smtp, client, django_capture_on_commit_callbacks
):
    invoice = _sent_invoice(owner_client, firm, django_capture_on_commit_callbacks)
    first = Delivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("invoicing:delivery_resend", args=[invoice.pk, first.pk]))

    earlier, newer = _tokens(smtp)

    assert earlier != newer
    assert _asks_for_a_new_link(client.get(reverse("invoicing:pay", args=[earlier])), earlier)
    assert client.get(reverse("invoicing:pay", args=[newer])).status_code == 200
