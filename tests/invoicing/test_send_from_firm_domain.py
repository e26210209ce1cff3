"""Invoices leave from the firm's own domain once its domain checks pass, else the platform's."""

from __future__ import annotations

import pytest
from django.urls import reverse

from invoicing.delivery.models import Delivery
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures
from tests.troubleshooting.test_domain_checks import PORTAL_ZONE, authenticated_zone
from troubleshooting.services import domain_checks_run

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

pytestmark = pytest.mark.usefixtures("tasks_run_inline")


@pytest.fixture(autouse=True)
def _site(settings, dns_server):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"
    settings.DNS_NAMESERVERS = [dns_server.host]
    settings.DNS_PORT = dns_server.port
    settings.PORTAL_SPF_INCLUDE = "_spf.portal.test"
    settings.PORTAL_DKIM_SELECTORS = [("pp1", "pp1.dkim.portal.test")]


@pytest.fixture
def firm_with_domain(firm):
    firm.sender_name = "Lehto Accounting"
    firm.sending_domain = "firm.test"
    firm.reply_to_email = "office@firm.test"
    firm.save()
    return firm


def _send_invoice(http, firm, capture):
    client = ClientFactory(firm=firm, display_name="Koivu Oy")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@koivu.test")
    invoice = invoice_with_lines(client=client)
    with capture(execute=True):
        http.post(reverse("invoicing:invoice_send", args=[invoice.pk]))


def test_a_firm_whose_domain_passes_the_checks_sends_from_its_own_address(
    staff_client, firm_with_domain, dns_zone, smtp, django_capture_on_commit_callbacks
):
    dns_zone(authenticated_zone(firm_with_domain))
    domain_checks_run(firm=firm_with_domain)

    _send_invoice(staff_client, firm_with_domain, django_capture_on_commit_callbacks)

    received = smtp.for_recipient("anna@koivu.test")
    assert str(received.message["From"]) == "Lehto Accounting <office@firm.test>"
    assert received.mail_from.endswith("@bounce.test")  # bounces still come to us
    assert Delivery.objects.get(address="anna@koivu.test").from_domain == "firm.test"


def test_a_firm_whose_domain_fails_the_checks_sends_from_the_platform(
    staff_client, firm_with_domain, dns_zone, smtp, django_capture_on_commit_callbacks
):
    dns_zone({**PORTAL_ZONE, "firm.test": [{"TXT": "v=spf1 mx -all"}]})
    domain_checks_run(firm=firm_with_domain)

    _send_invoice(staff_client, firm_with_domain, django_capture_on_commit_callbacks)

    received = smtp.for_recipient("anna@koivu.test")
    assert str(received.message["From"]) == "Lehto Accounting <no-reply@portal.test>"
    assert str(received.message["Reply-To"]) == "office@firm.test"
    assert Delivery.objects.get(address="anna@koivu.test").from_domain == "portal.test"


def test_firm_settings_say_which_address_invoices_leave_from(
    owner_client, firm_with_domain, dns_zone
):
    body = owner_client.get(reverse("accounts:firm_profile")).content.decode()
    assert "no-reply@portal.test" in body
    assert f"practice-portal-verification={firm_with_domain.domain_ownership_token()}" in body
    dns_zone(authenticated_zone(firm_with_domain))
    domain_checks_run(firm=firm_with_domain)
    body = owner_client.get(reverse("accounts:firm_profile")).content.decode()
    assert "Invoice emails leave from office@firm.test" in body
