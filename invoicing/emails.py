"""The invoice email: one builder, three templates (`emails/invoice-*`).

Every value that reaches a header is flattened to one line here, and Django refuses any
header that still holds a newline, so neither a firm's sender name nor a client's name can
add a header. The envelope sender (Django's `from_email`) is the per-delivery VERP address
(invoicing.verp) when BOUNCE_ADDRESS is set; the header From is always the platform's
address under the firm's name, never a member's or a client's.

The email is written in the client's language (`email_language`). `InvoiceEmailBuilder`
builds many emails in a row (the sender's groups): the templates, each firm's identity and
an invoice's rendered text (for its several recipients) are prepared once, not per email.
"""

from __future__ import annotations

import random
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from email.generator import BytesGenerator
from email.policy import Compat32
from email.utils import formataddr, make_msgid, parseaddr
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import SafeMIMEMultipart
from django.template.loader import get_template
from django.urls import reverse
from django.utils import translation
from django.utils.html import conditional_escape

from invoicing.models import Delivery, Invoice, InvoiceLine
from invoicing.verp import verp_address
from portal.emails import send_templated
from portal.mail_outbox import FIRM_HEADER
from portal.models import Client, Firm

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


def email_language(*, client: Client, firm: Firm) -> str:
    """The language an email to ``client`` is written in: the client's own, else the firm's
    default for its clients, else the portal's."""
    return client.language or firm.language or settings.LANGUAGE_CODE


@dataclass(frozen=True)
class _Sender:
    """What every email of one firm carries: its name, From, Reply-To and firm header."""

    name: str
    header_from: str
    reply_to: list[str] | None
    firm_id: str


def _sender(firm: Firm) -> _Sender:
    name = one_line(firm.sender_name or firm.name)
    reply_to = firm.reply_to_email.strip()
    if reply_to.count("@") != 1 or any(char.isspace() for char in reply_to):
        # Not one plain address (the field is a form-validated EmailField, but rows can come
        # from imports): sending without Reply-To beats sending a mangled one.
        reply_to = ""
    return _Sender(
        name=name,
        header_from=formataddr((name, platform_address())),
        reply_to=[reply_to] if reply_to else None,
        firm_id=str(firm.pk),
    )


class _Flattened:
    """A MIME message whose wire form was computed ahead of sending.

    Django's SMTP backend asks `message().as_bytes(linesep="\r\n")`; that answer is the
    bytes computed by `PreparedEmail.prepare`. Everything else is the message's own.
    """

    def __init__(self, mime: SafeMIMEMultipart, wire: bytes) -> None:
        self._mime = mime
        self._wire = wire

    def as_bytes(self, unixfrom: bool = False, linesep: str = "\n") -> bytes:
        if linesep == "\r\n" and not unixfrom:
            return self._wire
        return self._mime.as_bytes(unixfrom=unixfrom, linesep=linesep)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mime, name)

    def __getitem__(self, name: str) -> Any:
        return self._mime[name]


class _PlainLineCompat32(Compat32):
    """The policy Django flattens with (compat32), minus one cost: a value that is already a
    short line of printable ASCII skips `email.header.Header`, whose `encode` would return
    it unchanged (a fifth of the build time, for every header of every email). Anything
    else goes the stdlib's way. The output is byte for byte the same (a test compares)."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and self.max_line_length is not None
            and value.isascii()
            and value.isprintable()
            and value[-1:] not in ("", " ")
            and len(name) + 2 + len(value) <= self.max_line_length
        ):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


_PLAIN_LINE_POLICY = _PlainLineCompat32()


class PreparedEmail(EmailMultiAlternatives):
    """An invoice email that can be turned into its MIME bytes before it is sent.

    `prepare()` does Django's `message()` and the flattening once (the sender calls it in
    its builder thread, while the SMTP connection waits on the previous message); sending
    then only writes the bytes. Unprepared, it is a plain EmailMultiAlternatives.
    """

    _prepared: _Flattened | None = None

    def prepare(self) -> PreparedEmail:
        mime = super().message()
        # What Django's `as_bytes` does, with the policy above.
        out = BytesIO()
        BytesGenerator(out, mangle_from_=False, policy=_PLAIN_LINE_POLICY).flatten(
            mime, linesep="\r\n"
        )
        self._prepared = _Flattened(mime, out.getvalue())
        return self

    def _create_alternatives(self, msg: Any) -> Any:
        msg = super()._create_alternatives(msg)
        # The boundary the stdlib would pick (same form, as random), chosen here: left to
        # the generator, it compiles a new regular expression per email to check the body
        # against it, a tenth of the build time. A substring check is enough.
        parts = [self.body, *(alternative.content for alternative in self.alternatives)]
        while True:
            boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
            if not any(boundary in str(part) for part in parts):
                break
        msg.set_boundary(boundary)
        return msg

    def message(self) -> Any:
        if self._prepared is not None:
            return self._prepared
        return super().message()


class InvoiceEmailBuilder:
    """Builds invoice emails one after another, preparing once what they share.

    Templates are looked up once; each firm's identity once; an invoice's subject and
    bodies are rendered once per language and reused for its other recipients, with only
    the Pay Now link put in (a random placeholder nobody can type stands in for it).
    Holds no database connection: everything it reads comes with its arguments, so it can
    run in a thread of its own.
    """

    def __init__(self) -> None:
        self._templates = (
            get_template("emails/invoice-subject.txt"),
            get_template("emails/invoice-body-text.txt"),
            get_template("emails/invoice-body-html.html"),
        )
        self._domain = platform_address().rpartition("@")[2] or "portal.localhost"
        # `pay_url` without a URL resolver call per email (tokens need no quoting).
        marker = secrets.token_hex(8)
        self._pay_url = pay_url(marker).partition(marker)[::2]
        self._senders: dict[int, _Sender] = {}
        self._placeholder = f"pay-url-{secrets.token_hex(16)}"
        self._last_key: tuple[int, str, bool] | None = None
        self._last: tuple[str, str, str] = ("", "", "")

    def build(
        self,
        *,
        delivery: Delivery,
        invoice: Invoice,
        pay_token: str,
        lines: Sequence[InvoiceLine],
    ) -> PreparedEmail:
        firm = invoice.firm
        sender = self._senders.get(firm.pk)
        if sender is None:
            sender = self._senders[firm.pk] = _sender(firm)
        language = email_language(client=invoice.client, firm=firm)
        subject, text, html = self._rendered(invoice, lines, delivery.is_test, language, sender)
        url = pay_token.join(self._pay_url)
        message = PreparedEmail(
            subject=subject,
            body=text.replace(self._placeholder, url),
            # Django uses from_email as the SMTP envelope sender (Return-Path); the header
            # From below wins for what the recipient sees.
            from_email=verp_address(delivery) or sender.header_from,
            to=[delivery.address],
            reply_to=sender.reply_to,
            headers={
                "From": sender.header_from,
                "Message-ID": delivery.message_id or make_msgid(domain=self._domain),
                FIRM_HEADER: sender.firm_id,
                DELIVERY_HEADER: delivery.verp_token,
            },
        )
        message.attach_alternative(
            html.replace(self._placeholder, str(conditional_escape(url))), "text/html"
        )
        # An ESP must not rewrite the Pay Now link through its click tracker: the client
        # should see our domain, and mail filters flag links whose domain differs from the
        # sender's.
        message.track_clicks = False
        return message

    def _rendered(
        self,
        invoice: Invoice,
        lines: Sequence[InvoiceLine],
        is_test: bool,
        language: str,
        sender: _Sender,
    ) -> tuple[str, str, str]:
        key = (invoice.pk, language, is_test)
        if key == self._last_key and invoice.pk is not None:
            return self._last
        context = {
            "invoice": invoice,
            "firm": invoice.firm,
            "firm_name": sender.name,
            "client_name": invoice.client_name or invoice.client.display_name,
            "lines": lines,
            # Summed once here: `invoice.total` in the templates read the lines each time.
            "total": lines_total(lines),
            "pay_url": self._placeholder,
            "is_test": is_test,
        }
        subject_template, text_template, html_template = self._templates
        with translation.override(language):
            rendered = (
                one_line(subject_template.render(context)),
                text_template.render(context),
                html_template.render(context),
            )
        self._last_key, self._last = key, rendered
        return rendered


def invoice_email_build(
    *,
    delivery: Delivery,
    invoice: Invoice,
    pay_token: str,
    lines: Sequence[InvoiceLine] | None = None,
) -> PreparedEmail:
    """The email for one delivery, in the client's language. ``lines``: the invoice's lines
    when the caller already read them."""
    if lines is None:
        lines = list(invoice.lines.all())
    return InvoiceEmailBuilder().build(
        delivery=delivery, invoice=invoice, pay_token=pay_token, lines=lines
    )


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
