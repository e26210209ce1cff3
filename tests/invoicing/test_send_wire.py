"""The sender writes each invoice email's bytes itself: they are what Django would send.

`InvoiceEmailBuilder` renders the text every email of one firm and language shares once,
and writes the MIME bytes and the SMTP envelope without Django's backend. The reference is
the plain way: every template rendered with the real values (`invoice_email_render`), an
`EmailMultiAlternatives` with the same headers, `message().as_bytes()`, and the envelope
Django's SMTP backend would compute with `sanitize_address`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from email.utils import formataddr
from unittest import mock

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import sanitize_address

from invoicing.delivery.models import Delivery
from invoicing.delivery.sender import deliveries_send
from invoicing.delivery.verp import verp_address
from invoicing.emails import (
    DELIVERY_HEADER,
    InvoiceEmailBuilder,
    invoice_email_render,
    pay_url,
)
from invoicing.models import InvoiceLine
from invoicing.sending import invoices_send_bulk
from portal.mail_outbox import FIRM_HEADER
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, FirmFactory
from tests.invoicing import factories
from tests.invoicing.factories import InvoiceLineFactory, invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

TOKEN = "T" * 40 + "_-a"


@pytest.fixture(autouse=True)
def _site(settings):
    settings.DELIVERY_SOFT_RETRY_MINUTES = []
    settings.SITE_URL = "http://testserver"
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = "bounces@bounce.test"


def _delivery(invoice, address, *, is_test=False, n=1):
    return Delivery(
        pk=n,
        firm=invoice.firm,
        invoice=invoice,
        client=invoice.client,
        address=address,
        normalized=address.lower(),
        is_test=is_test,
        verp_token=f"{n:032d}",
        message_id=f"<{n}.delivery@portal.test>",
    )


def _reference(delivery, language):
    """The email built the plain way, with Django's own serialisation and envelope."""
    invoice = delivery.invoice
    lines = list(invoice.lines.all())
    subject, text, html = invoice_email_render(
        invoice=invoice,
        lines=lines,
        is_test=delivery.is_test,
        language=language,
        url=pay_url(TOKEN),
    )
    firm = invoice.firm
    # The firm's name as the display name of the platform's address.
    from_header = formataddr((firm.sender_name or firm.name, "no-reply@portal.test"))
    email = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=verp_address(delivery) or from_header,
        to=[delivery.address],
        reply_to=[firm.reply_to_email] if firm.reply_to_email else None,
        headers={
            "From": from_header,
            "Message-ID": delivery.message_id,
            FIRM_HEADER: str(firm.pk),
            DELIVERY_HEADER: delivery.verp_token,
        },
    )
    email.attach_alternative(html, "text/html")
    envelope = (
        sanitize_address(email.from_email, "utf-8"),
        [sanitize_address(a, "utf-8") for a in email.recipients()],
    )
    return envelope, email.message().as_bytes(linesep="\r\n")


def _comparable(data: bytes) -> bytes:
    """Date and MIME boundary differ between two builds of the same email."""
    data = re.sub(rb"Date: [^\r]*", b"Date: -", data)
    return re.sub(rb"={15}\d{19}==", b"-boundary-", data)


def _built(builder, delivery):
    invoice = delivery.invoice
    email = builder.build(
        delivery=delivery, invoice=invoice, pay_token=TOKEN, lines=list(invoice.lines.all())
    )
    return builder.envelope(email)


CASES = [
    # firm name, sender name, reply-to, client name, language, notes, address, is_test
    ("Alder & Birch", "", "billing@alder.test", "Birch Dental", "en", "", "anna@client.test", 0),
    ("Koivu & Kuusi Tilitoimisto", "Tilitoimisto Åkerlund", "", "Öljy Oy", "fi", "", "a@b.test", 0),
    (
        "Abedul",
        "Contabilidad Peña y Núñez, S.L.",
        "info@abedul.test",
        "Café <Ñandú>",
        "es",
        "Gracias\npor todo",
        "Ana.Pérez@Client.TEST",
        0,
    ),
    (
        "Bjørk Regnskap " + "x" * 70,
        "",
        "",
        "Ærlig & Sønn AS " + "y" * 40,
        "nb",
        "",
        "ola@bjørk.test",
        1,
    ),
    (
        "Brzoza",
        "Biuro Rachunkowe Żółć",
        "",
        "Łódź Sp. z o.o.",
        "pl",
        "Linia " + "długa " * 200,
        "jan@client.test",
        0,
    ),
    ("Plain", "", "", "Q", "en", "", '"odd local"@client.test', 0),
]


@pytest.mark.parametrize(
    (
        "firm_name",
        "sender_name",
        "reply_to",
        "client_name",
        "language",
        "notes",
        "address",
        "is_test",
    ),
    CASES,
)
def test_every_email_is_byte_for_byte_the_plainly_rendered_one_django_would_send(
    db, firm_name, sender_name, reply_to, client_name, language, notes, address, is_test
):
    firm = FirmFactory(name=firm_name, sender_name=sender_name, reply_to_email=reply_to)
    client = ClientFactory(firm=firm, display_name=client_name, language=language)
    invoice = invoice_with_lines(client=client, notes=notes, number=1234)
    InvoiceLineFactory(
        invoice=invoice,
        description="Palkat & <extras>",
        quantity=Decimal("2.5"),
        unit_price=Decimal("1234.56"),
    )
    delivery = _delivery(invoice, address, is_test=bool(is_test))

    envelope = _built(InvoiceEmailBuilder(), delivery)
    (sender, recipients), expected = _reference(delivery, language)

    assert (envelope.sender, envelope.recipients) == (sender, recipients)
    assert _comparable(envelope.data) == _comparable(expected)


def test_many_emails_from_one_builder_each_carry_their_own_invoice_and_language(firm):
    """The frame is shared per firm and language: nothing of one invoice leaks into the next."""
    builder = InvoiceEmailBuilder()
    other_firm = FirmFactory(name="Kuusi Oy", language="fi")
    deliveries = []
    for n, (owner, language) in enumerate(
        [(firm, "en"), (other_firm, ""), (firm, "es"), (firm, "en"), (other_firm, "pl")], 1
    ):
        client = ClientFactory(firm=owner, display_name=f"Client {n}", language=language)
        invoice = invoice_with_lines(client=client, lines=n, notes="note" * (n % 2))
        deliveries.append(
            (_delivery(invoice, f"c{n}@client.test", n=n), language or owner.language)
        )

    for delivery, language in deliveries:
        _envelope, expected = _reference(delivery, language)
        assert _comparable(_built(builder, delivery).data) == _comparable(expected)


def test_emails_for_one_invoices_recipients_differ_only_in_their_address_and_link(firm):
    builder = InvoiceEmailBuilder()
    invoice = invoice_with_lines(client=ClientFactory(firm=firm, display_name="Birch"))
    first, second = (
        _delivery(invoice, "a@client.test", n=1),
        _delivery(invoice, "b@client.test", n=2),
    )

    for delivery in (first, second):
        _envelope, expected = _reference(delivery, "en")
        assert _comparable(_built(builder, delivery).data) == _comparable(expected)


# --- over SMTP ----------------------------------------------------------------------------


def _queued(firm, *addresses, language=""):
    client = ClientFactory(firm=firm, display_name="Öljy & Koivu Oy", language=language)
    contact = ContactFactory(client=client, name="Anna")
    for address in addresses:
        ContactAddressFactory(contact=contact, address=address, is_primary=False)
    invoice = invoice_with_lines(client=client)
    with mock.patch("invoicing.delivery.tasks.deliveries_send_task.delay"):
        result = invoices_send_bulk(invoices=[invoice])
    return [d.pk for d in result.deliveries]


def test_over_smtp_the_server_receives_the_envelope_and_headers_a_client_expects(firm, smtp):
    firm.sender_name, firm.reply_to_email = "Alder & Björk", "billing@alder.test"
    firm.save()
    ids = _queued(firm, "anna@client.test", language="fi")

    assert deliveries_send(delivery_ids=ids) == []

    delivery = Delivery.objects.get(pk=ids[0])
    (received,) = smtp.received
    assert received.mail_from == verp_address(delivery)  # the VERP Return-Path
    assert received.rcpt_tos == ["anna@client.test"]
    message = received.message
    assert message["From"].addresses[0].display_name == "Alder & Björk"
    assert message["From"].addresses[0].addr_spec == "no-reply@portal.test"
    assert str(message["Reply-To"]) == "billing@alder.test"
    assert message["Message-ID"] == delivery.message_id
    assert message[DELIVERY_HEADER] == delivery.verp_token
    assert "Lasku nro" in str(message["Subject"])
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Katso ja maksa lasku:" in text
    link = re.search(r"http://testserver/pay/[A-Za-z0-9_-]{43}/", text).group(0)
    assert f'<a href="{link}"' in html  # the link itself, not a tracker's


def test_over_smtp_the_bytes_received_are_the_ones_django_would_have_sent(firm, smtp):
    ids = _queued(firm, "anna@client.test", "Bo@Client.TEST")

    deliveries_send(delivery_ids=ids)

    for received in smtp.received:
        delivery = Delivery.objects.get(pk__in=ids, address=received.rcpt_tos[0])
        token = re.search(
            r"/pay/([A-Za-z0-9_-]{43})/", received.message.get_body(("plain",)).get_content()
        ).group(1)
        email = InvoiceEmailBuilder().build(
            delivery=delivery,
            invoice=delivery.invoice,
            pay_token=token,
            lines=list(InvoiceLine.objects.filter(invoice=delivery.invoice)),
        )
        expected = email.message().as_bytes(linesep="\r\n")  # Django's serialisation
        assert received.mail_from == sanitize_address(email.from_email, "utf-8")
        # aiosmtpd hands over the DATA as sent; smtplib adds nothing for these bytes.
        assert _comparable(received.data) == _comparable(expected)


def test_a_refused_recipient_is_recorded_with_the_servers_code_on_the_direct_path(firm, smtp):
    ids = _queued(firm, "ok@client.test", smtp_fixtures.UNKNOWN)

    assert deliveries_send(delivery_ids=ids) == []

    refused = Delivery.objects.get(pk__in=ids, address=smtp_fixtures.UNKNOWN)
    assert (refused.status, refused.problem_code) == ("bounced", "delivery.hard_bounce")
    event = refused.events.get()
    assert (event.reply_code, event.status_code, event.source) == ("550", "5.1.1", "smtp")
    assert [r.rcpt_tos for r in smtp.received] == [["ok@client.test"]]


def test_through_an_esp_backend_the_email_goes_through_send_messages(firm, settings, mailoutbox):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    ids = _queued(firm, "anna@client.test")

    assert deliveries_send(delivery_ids=ids) == []

    (email,) = mailoutbox
    assert isinstance(email, EmailMultiAlternatives)
    assert email.anymail_test_params["track_clicks"] is False
    assert email.extra_headers["Message-ID"] == Delivery.objects.get(pk=ids[0]).message_id
    assert Delivery.objects.get(pk=ids[0]).status == Delivery.Status.SENT
