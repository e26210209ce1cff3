"""The invoice email: one builder, three templates (`emails/invoice-*`).

Every value that reaches a header is flattened to one line here, and Django refuses any
header that still holds a newline, so neither a firm's sender name nor a client's name can
add a header. The envelope sender (Django's `from_email`) is the per-delivery VERP address
(invoicing.delivery.verp) when BOUNCE_ADDRESS is set; the header From is always the platform's
address under the firm's name, never a member's or a client's.

The email is written in the client's language (`email_language`). `InvoiceEmailBuilder`
builds many emails in a row (the sender's groups): the templates, each firm's identity, the
text every email of one firm and language shares (the frame templates, rendered once with
stand-ins for the invoice's values) and an invoice's rendered text (for its several
recipients) are prepared once, not per email. `InvoiceEmailBuilder.envelope` writes the SMTP
envelope and wire bytes of the email directly, byte for byte what Django's SMTP backend would
send (tests compare the two for many shapes of email), falling back to Django's own
serialisation for anything outside the one shape it writes.

One piece (over 500 lines) on purpose: the builder's caches (templates, firm identities,
shared frame text) and the byte-for-byte envelope must agree with one another and with
Django's SMTP backend; kept together so the header-injection rules above hold in one place.
"""

from __future__ import annotations

import random
import re
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from email.generator import BytesGenerator
from email.policy import Compat32
from email.utils import formataddr, formatdate, make_msgid
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import (
    SafeMIMEMultipart,
    forbid_multi_line_headers,
    sanitize_address,
)
from django.template import Context
from django.template.base import render_value_in_context
from django.template.loader import get_template
from django.urls import reverse
from django.utils import translation
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

from invoicing.delivery.models import Delivery
from invoicing.delivery.verp import verp_address
from invoicing.models import Invoice, InvoiceLine
from portal.addresses import AddressError, validate_address
from portal.emails import platform_address, platform_domain, send_templated
from portal.headers import header_text
from portal.mail_outbox import FIRM_HEADER
from portal.models import Client, Firm

DELIVERY_HEADER = "X-Portal-Delivery"
# The delivery's token in an ESP message's metadata, which the ESP echoes in every webhook:
# events match their delivery even when the ESP's message id never reached it (an ESP call
# that timed out, a sender that died before recording).
DELIVERY_METADATA_KEY = "portal_delivery"


def one_line(value: str) -> str:
    """Collapse every kind of line break and run of spaces into single spaces, including
    one hidden in an RFC 2047 encoded word (see portal.headers)."""
    return header_text(value)


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
    if reply_to:
        try:
            reply_to = validate_address(reply_to, check_deliverability=False).address
        except AddressError:
            # Not one plain address (the form validates it, but rows can come from imports
            # or older releases): sending without Reply-To beats sending a mangled one, or
            # none at all.
            reply_to = ""
    return _Sender(
        name=name,
        # The firm's own address once its domain authenticates the portal's mail (DKIM and
        # SPF checked by troubleshooting); the platform's otherwise, never the member's.
        header_from=formataddr((name, firm.own_sender_address() or platform_address())),
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
# The same, as the generator clones it to flatten with CRLF.
_WIRE_POLICY = _PLAIN_LINE_POLICY.clone(linesep="\r\n")


def _new_boundary(parts: Sequence[str]) -> str:
    """The boundary the stdlib would pick (same form, as random), checked against the parts
    with a substring test: left to the generator, it compiles a new regular expression per
    email to check the body against it, a tenth of the build time."""
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
        if not any(boundary in part for part in parts):
            return boundary


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
        parts = [self.body, *(str(alternative.content) for alternative in self.alternatives)]
        msg.set_boundary(_new_boundary(parts))
        return msg

    def message(self) -> Any:
        if self._prepared is not None:
            return self._prepared
        return super().message()


@dataclass(frozen=True)
class Envelope:
    """What goes to smtplib's `sendmail`: the envelope and the message's wire bytes."""

    sender: str
    recipients: list[str]
    data: bytes


# An address `sanitize_address` returns unchanged: a dot-atom local part and a lower-case
# ASCII domain (IDNA would lower-case it). Anything else takes Django's way.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_LINE_BREAKS = re.compile(rb"\r\n|\r|\n")
# What Django's SafeMIMEText switches to quoted-printable above (RFC 5322's line limit).
_LINE_LIMIT = 998
_PART_HEAD = 'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'


def _sanitized(address: str) -> str:
    """`sanitize_address(address, "utf-8")` without parsing a plain address."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return address
    return sanitize_address(address, "utf-8")


def _text_part(subtype: str, text: str) -> bytes | None:
    """A text part as Django's SafeMIMEText flattens it (8bit or 7bit), or None when Django
    would write it another way (quoted-printable for long lines)."""
    if any(len(line.encode(errors="surrogateescape")) > _LINE_LIMIT for line in text.splitlines()):
        return None
    data = text.encode()
    encoding = "7bit" if data.isascii() else "8bit"
    head = _PART_HEAD.format(subtype=subtype) + f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    return head.encode() + _LINE_BREAKS.sub(b"\r\n", data)


class InvoiceEmailBuilder:
    """Builds invoice emails one after another, preparing once what they share.

    Templates are looked up once; each firm's identity once; the frame of the subject and
    bodies (everything but the invoice's own values) once per firm, language and test flag;
    an invoice's details (lines, total, due date, notes) once per language and reused for
    its other recipients, with only the Pay Now link put in. Random stand-ins nobody can
    type hold the places of the per-invoice values in the rendered frame; each value is
    then rendered as the template would (`render_value_in_context`, escaped in HTML).
    Holds no database connection: everything it reads comes with its arguments, so it can
    run in a thread of its own.
    """

    def __init__(self, *, verp: bool = True) -> None:
        # VERP needs a backend that lets us set the envelope sender (SMTP). ESPs set their
        # own Return-Path and report bounces by webhook; anymail refuses `envelope_sender`
        # for most of them, so asking for it would fail every send.
        self._verp = verp
        self._frame_templates = (
            get_template("emails/invoice-subject.txt"),
            get_template("emails/invoice-body-text.txt"),
            get_template("emails/invoice-body-html.html"),
        )
        self._details_templates = (
            get_template("emails/invoice-details-text.txt"),
            get_template("emails/invoice-details-html.html"),
        )
        self._domain = platform_domain()
        # `pay_url` without a URL resolver call per email (tokens need no quoting).
        marker = secrets.token_hex(8)
        self._pay_url = pay_url(marker).partition(marker)[::2]
        self._senders: dict[int, _Sender] = {}
        stand_in = secrets.token_hex(16)
        self._placeholder = f"pay-url-{stand_in}"
        self._number = f"number-{stand_in}"
        self._client = f"client-{stand_in}"
        self._details = f"details-{stand_in}"
        self._frames: dict[tuple[int, str, bool], tuple[str, str, str]] = {}
        self._last_key: tuple[int, str, bool] | None = None
        self._last: tuple[str, str, str] = ("", "", "")
        self._header_lines: dict[tuple[str, str], bytes] = {}
        self._date: tuple[int, str] = (-1, "")
        sample = _new_boundary([])
        self._content_type = (
            self._header_line("Content-Type", f'multipart/alternative; boundary="{sample}"'),
            sample,
        )

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
        headers = {
            "From": sender.header_from,
            "Message-ID": delivery.message_id or make_msgid(domain=self._domain),
            FIRM_HEADER: sender.firm_id,
            DELIVERY_HEADER: delivery.verp_token,
        }
        envelope_from = self._verp and verp_address(delivery)
        if not self._verp:
            # An ESP (anymail) reads a From header beside from_email as a request for an
            # envelope sender, which most refuse: from_email alone says who it is from.
            del headers["From"]
        message = PreparedEmail(
            subject=subject,
            body=text.replace(self._placeholder, url),
            # Django uses from_email as the SMTP envelope sender (Return-Path); the header
            # From wins for what the recipient sees.
            from_email=envelope_from or sender.header_from,
            to=[delivery.address],
            reply_to=sender.reply_to,
            headers=headers,
        )
        message.attach_alternative(
            html.replace(self._placeholder, str(conditional_escape(url))), "text/html"
        )
        # An ESP must not rewrite the Pay Now link through its click tracker: the client
        # should see our domain, and mail filters flag links whose domain differs from the
        # sender's.
        message.track_clicks = False
        if not self._verp:
            message.metadata = {DELIVERY_METADATA_KEY: delivery.verp_token}
        return message

    def envelope(self, message: PreparedEmail) -> Envelope:
        """What Django's SMTP backend would hand to `smtplib.SMTP.sendmail` for a message
        from `build`, without its re-parsing of every address and the MIME objects."""
        sender = _sanitized(message.from_email)
        recipients = [_sanitized(address) for address in message.recipients()]
        data = self._wire(message)
        if data is None:  # not the one shape written here: Django's own way
            data = message.prepare().message().as_bytes(linesep="\r\n")
        return Envelope(sender, recipients, data)

    def _wire(self, message: PreparedEmail) -> bytes | None:
        """`message.message().as_bytes(linesep=CRLF)` for the builder's one shape of
        email (headers as `build` sets them, a text and an HTML part), or None."""
        if len(message.alternatives) != 1 or message.cc or message.bcc or message.attachments:
            return None
        html = str(message.alternatives[0].content)
        text_part = _text_part("plain", message.body)
        html_part = _text_part("html", html)
        if text_part is None or html_part is None:
            return None
        headers = message.extra_headers
        boundary = _new_boundary([message.body, html])
        content_type, sample = self._content_type
        lines = [
            content_type.replace(sample.encode(), boundary.encode()),
            b"MIME-Version: 1.0\r\n",
            self._header_line("Subject", message.subject),
            self._header_line("From", headers["From"], cache=True),
            self._header_line("To", ", ".join(message.to)),
        ]
        if message.reply_to:
            lines.append(self._header_line("Reply-To", ", ".join(message.reply_to), cache=True))
        lines.append(self._header_line("Date", self._now()))
        for name, value in headers.items():
            if name.lower() not in {"from", "to", "cc", "reply-to"}:
                lines.append(self._header_line(name, value, cache=name == FIRM_HEADER))
        separator = f"--{boundary}\r\n".encode()
        lines += [
            b"\r\n",
            separator,
            text_part,
            b"\r\n",
            separator,
            html_part,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        return b"".join(lines)

    def _header_line(self, name: str, value: str, *, cache: bool = False) -> bytes:
        """One header as Django sets it (`forbid_multi_line_headers`: address parsing and
        RFC 2047 encoding) and compat32 folds it. ``cache``: a value every email of the
        group repeats (a firm's From, Reply-To)."""
        if cache:
            found = self._header_lines.get((name, value))
            if found is not None:
                return found
        if name == "To" and _PLAIN_ADDRESS.fullmatch(value):
            stored = value  # what forbid_multi_line_headers would make of it
        else:
            name, stored = forbid_multi_line_headers(name, value, "utf-8")
        line = _WIRE_POLICY.fold_binary(name, stored)
        if cache:
            self._header_lines[(name, value)] = line
        return line

    def _now(self) -> str:
        """Django's Date header; formatted once per second (its resolution)."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, formatdate(second, localtime=settings.EMAIL_USE_LOCALTIME))
        return self._date[1]

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
        frame_key = (invoice.firm.pk, language, is_test)
        frame = self._frames.get(frame_key)
        if frame is None:
            frame = self._frames[frame_key] = self._frame(invoice.firm, is_test, language, sender)
        client_name = invoice.client_name or invoice.client.display_name
        context = {"invoice": invoice, "lines": lines, "total": lines_total(lines)}
        text_details, html_details = self._details_templates
        plain, escaped = Context(autoescape=False), Context(autoescape=True)
        with translation.override(language):
            texts = {
                self._number: render_value_in_context(invoice.number, plain),
                self._client: render_value_in_context(client_name, plain),
                self._details: text_details.render(context),
            }
            htmls = {
                self._number: render_value_in_context(invoice.number, escaped),
                self._client: render_value_in_context(client_name, escaped),
                self._details: html_details.render(context),
            }
        subject, text, html = frame
        for stand_in, value in texts.items():
            subject = subject.replace(stand_in, value)
            text = text.replace(stand_in, value)
        for stand_in, value in htmls.items():
            html = html.replace(stand_in, value)
        rendered = (one_line(subject), text, html)
        self._last_key, self._last = key, rendered
        return rendered

    def _frame(
        self, firm: Firm, is_test: bool, language: str, sender: _Sender
    ) -> tuple[str, str, str]:
        """The three templates rendered with stand-ins for the invoice's values."""
        context = {
            "firm": firm,
            "firm_name": sender.name,
            "is_test": is_test,
            "invoice_number": self._number,
            "client_name": self._client,
            "details": self._details,
            "pay_url": self._placeholder,
        }
        subject_template, text_template, html_template = self._frame_templates
        with translation.override(language):
            return (
                subject_template.render(context),
                text_template.render(context),
                html_template.render(context),
            )


def invoice_email_render(
    *, invoice: Invoice, lines: Sequence[InvoiceLine], is_test: bool, language: str, url: str
) -> tuple[str, str, str]:
    """Subject, text and HTML of an invoice email rendered the plain way (every template
    with the real values, nothing cached): what `InvoiceEmailBuilder` must produce."""
    firm_name = _sender(invoice.firm).name
    context: dict[str, Any] = {
        "invoice": invoice,
        "lines": lines,
        "total": lines_total(lines),
    }
    subject_template = get_template("emails/invoice-subject.txt")
    text_template = get_template("emails/invoice-body-text.txt")
    html_template = get_template("emails/invoice-body-html.html")
    with translation.override(language):
        frame = {
            "firm": invoice.firm,
            "firm_name": firm_name,
            "is_test": is_test,
            "invoice_number": invoice.number,
            "client_name": invoice.client_name or invoice.client.display_name,
            "pay_url": url,
        }
        text_details = get_template("emails/invoice-details-text.txt").render(context)
        html_details = get_template("emails/invoice-details-html.html").render(context)
        return (
            one_line(subject_template.render(frame)),
            text_template.render({**frame, "details": text_details}),
            html_template.render({**frame, "details": mark_safe(html_details)}),  # noqa: S308
        )


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
