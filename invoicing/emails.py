"""The invoice email: one builder, three templates (`emails/invoice-*`).

Every value that reaches a header is flattened to one line here, and Django refuses any
header that still holds a newline, so neither a firm's sender name nor a client's name can
add a header. The envelope sender (Django's `from_email`) is the per-delivery VERP address
(invoicing.verp) when BOUNCE_ADDRESS is set; the header From is always the platform's
address under the firm's name, never a member's or a client's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from email.utils import formataddr, make_msgid, parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from invoicing.models import Delivery, Invoice, InvoiceLine
from invoicing.verp import verp_address
from portal.emails import send_templated
from portal.mail_outbox import FIRM_HEADER

DELIVERY_HEADER = "X-Portal-Delivery"


def one_line(value: str) -> str:
    """Collapse every kind of line break and run of spaces into single spaces."""
    return " ".join(str(value).split())


def platform_address() -> str:
    return parseaddr(settings.DEFAULT_FROM_EMAIL)[1]


def pay_url(token: str) -> str:
    return settings.SITE_URL + reverse("invoicing:pay", args=[token])


def lines_total(lines: Iterable[InvoiceLine]) -> Decimal:
    """What `Invoice.total` says, from lines already in hand (no query)."""
    return sum((line.amount for line in lines), Decimal("0.00"))


def invoice_email_build(
    *,
    delivery: Delivery,
    invoice: Invoice,
    pay_token: str,
    lines: Sequence[InvoiceLine] | None = None,
) -> EmailMultiAlternatives:
    """The email for one delivery. ``lines``: the invoice's lines when the caller already
    read them (the bulk sender reads a whole chunk's lines in one query)."""
    firm = invoice.firm
    display_name = one_line(firm.sender_name or firm.name)
    header_from = formataddr((display_name, platform_address()))
    if lines is None:
        lines = list(invoice.lines.all())
    context = {
        "invoice": invoice,
        "firm": firm,
        "firm_name": display_name,
        "client_name": invoice.client_name or invoice.client.display_name,
        "lines": lines,
        # Summed once here: `invoice.total` in the templates read the lines again each time.
        "total": lines_total(lines),
        "pay_url": pay_url(pay_token),
        "is_test": delivery.is_test,
    }
    with translation.override(settings.LANGUAGE_CODE):
        subject = one_line(render_to_string("emails/invoice-subject.txt", context))
        text = render_to_string("emails/invoice-body-text.txt", context)
        html = render_to_string("emails/invoice-body-html.html", context)
    domain = platform_address().rpartition("@")[2] or "portal.localhost"
    headers = {
        "From": header_from,
        "Message-ID": delivery.message_id or make_msgid(domain=domain),
        FIRM_HEADER: str(firm.pk),
        DELIVERY_HEADER: delivery.verp_token,
    }
    reply_to = firm.reply_to_email.strip()
    if reply_to.count("@") != 1 or any(char.isspace() for char in reply_to):
        # Not one plain address (the field is a form-validated EmailField, but rows can come
        # from imports): sending without Reply-To beats sending a mangled one.
        reply_to = ""
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        # Django uses from_email as the SMTP envelope sender (Return-Path); the header From
        # above wins for what the recipient sees.
        from_email=verp_address(delivery) or header_from,
        to=[delivery.address],
        reply_to=[reply_to] if reply_to else None,
        headers=headers,
    )
    message.attach_alternative(html, "text/html")
    # An ESP must not rewrite the Pay Now link through its click tracker: the client should
    # see our domain, and mail filters flag links whose domain differs from the sender's.
    message.track_clicks = False
    return message


def invoice_paid_notify(*, invoice: Invoice, owners: list[str]) -> None:
    if not owners:
        return
    send_templated(
        "invoice-paid",
        to=owners,
        context={
            "invoice": invoice,
            "client_name": invoice.client_name or invoice.client.display_name,
            "link": settings.SITE_URL + invoice.get_absolute_url(),
        },
        firm=invoice.firm,
    )
