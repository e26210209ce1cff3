"""An invoice email is written in the client's language, else the firm's, else the portal's."""

from __future__ import annotations

import pytest
from django.urls import reverse

from invoicing.delivery.models import Delivery
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

pytestmark = pytest.mark.usefixtures("tasks_run_inline")


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"


def _client(firm, address, *, language=""):
    client = ClientFactory(firm=firm, display_name="Koivu Oy", language=language)
    ContactAddressFactory(contact=ContactFactory(client=client), address=address)
    return client


def _send(http, invoice, capture):
    with capture(execute=True):
        http.post(reverse("invoicing:invoice_send", args=[invoice.pk]))


def _subject(received):
    # Django folds an encoded subject onto a line of its own: parsed, it starts with a space.
    return str(received.message["Subject"]).strip()


def _text(received):
    return received.message.get_body(("plain",)).get_content()


def _html(received):
    return received.message.get_body(("html",)).get_content()


def test_a_finnish_client_receives_the_invoice_in_finnish(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client(firm, "anna@koivu.test", language="fi"))

    _send(staff_client, invoice, django_capture_on_commit_callbacks)

    received = smtp.for_recipient("anna@koivu.test")
    assert _subject(received).startswith(f"Lasku nro {invoice.number}:")
    assert "Yhteensä: 200,00 EUR" in _text(received)  # and Finnish number formatting
    assert "Katso ja maksa lasku:" in _text(received)
    assert "Maksa nyt" in _html(received)
    assert "Pay Now" not in _html(received)


def test_a_client_without_a_language_gets_the_firms(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    firm.language = "es"
    firm.save()
    invoice = invoice_with_lines(client=_client(firm, "ana@abedul.test"))

    _send(staff_client, invoice, django_capture_on_commit_callbacks)

    received = smtp.for_recipient("ana@abedul.test")
    assert _subject(received).startswith(f"Factura n.º {invoice.number} de ")
    assert "Pagar ahora" in _html(received)


def test_the_clients_own_language_wins_over_the_firms(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    firm.language = "es"
    firm.save()
    invoice = invoice_with_lines(client=_client(firm, "anna@koivu.test", language="fi"))

    _send(staff_client, invoice, django_capture_on_commit_callbacks)

    assert "Maksa nyt" in _html(smtp.for_recipient("anna@koivu.test"))


def test_without_any_language_set_the_email_is_in_the_portals_language(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client(firm, "anna@birch.test"))

    _send(staff_client, invoice, django_capture_on_commit_callbacks)

    assert "Pay Now" in _html(smtp.for_recipient("anna@birch.test"))


def test_the_member_sending_in_another_language_does_not_change_the_clients(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client(firm, "anna@koivu.test", language="fi"))

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("invoicing:invoice_send", args=[invoice.pk]), HTTP_ACCEPT_LANGUAGE="pl"
        )

    assert "Maksa nyt" in _html(smtp.for_recipient("anna@koivu.test"))


def test_a_test_to_myself_is_in_the_clients_language(
    staff_client, staff, firm, smtp, django_capture_on_commit_callbacks
):
    invoice = invoice_with_lines(client=_client(firm, "anna@koivu.test", language="fi"))
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:invoice_send_test", args=[invoice.pk]))
    assert "Maksa nyt" in _html(smtp.for_recipient(staff.user.email))


def test_the_client_form_sets_the_language(staff_client, firm):
    client = ClientFactory(firm=firm, display_name="Koivu Oy")
    url = reverse("portal:client_edit", args=[client.pk])
    page = staff_client.get(url).content.decode()
    assert 'name="language"' in page
    assert "The firm&#x27;s language" in page

    staff_client.post(
        url, {"display_name": "Koivu Oy", "kind": "company", "status": "active", "language": "fi"}
    )

    client.refresh_from_db()
    assert client.language == "fi"


def test_a_new_client_can_be_created_with_a_language(staff_client, firm):
    staff_client.post(
        reverse("portal:client_create"),
        {"display_name": "Abedul SL", "kind": "company", "status": "active", "language": "es"},
    )
    assert firm.clients.get(display_name="Abedul SL").language == "es"


def test_the_firm_settings_set_the_default_language(owner_client, firm):
    owner_client.post(
        reverse("accounts:firm_profile"),
        {
            "name": firm.name,
            "sender_name": "",
            "reply_to_email": "",
            "sending_domain": "",
            "language": "nb",
        },
    )
    firm.refresh_from_db()
    assert firm.language == "nb"


def test_a_resend_after_the_client_changed_language_goes_out_in_the_new_one(
    staff_client, firm, smtp, django_capture_on_commit_callbacks
):
    client = _client(firm, "anna@koivu.test", language="fi")
    invoice = invoice_with_lines(client=client)
    _send(staff_client, invoice, django_capture_on_commit_callbacks)
    client.language = "es"
    client.save()
    delivery = Delivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("invoicing:delivery_resend", args=[invoice.pk, delivery.pk]))
    assert "Maksa nyt" in _html(smtp.received[0])
    assert "Pagar ahora" in _html(smtp.received[1])
