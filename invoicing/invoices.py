"""Invoices: numbering, drafts and their lines, voiding; the firm's billing settings.

`InvoiceError` is the refusal every invoicing action raises with a message fit to show the
member. Sending an invoice is `invoicing.sending`; its Pay Now links `invoicing.paylinks`;
money received `invoicing.payments.recording`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from invoicing.models import FirmBillingSettings, Invoice, InvoiceLine, PayLink
from portal.models import Client, Firm


class InvoiceError(ValueError):
    """An action refused, with a message fit to show the member."""


@dataclass(frozen=True)
class LineData:
    description: str
    quantity: Decimal
    unit_price: Decimal


NUMBER_ATTEMPTS = 5


def _next_number(firm: Firm) -> int:
    return (Invoice.objects.filter(firm=firm).aggregate(last=Max("number"))["last"] or 0) + 1


def _lines_replace(invoice: Invoice, lines: Sequence[LineData]) -> None:
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            description=line.description,
            quantity=line.quantity,
            unit_price=line.unit_price,
            position=position,
        )
        for position, line in enumerate(lines)
    )


def invoice_create(
    *,
    firm: Firm,
    client: Client,
    created_by: User | None,
    due_date: date,
    lines: Sequence[LineData],
    currency: str = "EUR",
    issue_date: date | None = None,
    notes: str = "",
) -> Invoice:
    """Create a draft with the firm's next number; two members saving at once both succeed."""
    if client.firm_id != firm.pk:
        raise InvoiceError(_("This client belongs to another firm."))
    for attempt in range(NUMBER_ATTEMPTS):
        try:
            with transaction.atomic():
                invoice = Invoice.objects.create(
                    firm=firm,
                    client=client,
                    number=_next_number(firm),
                    currency=currency,
                    issue_date=issue_date or timezone.localdate(),
                    due_date=due_date,
                    notes=notes,
                    client_name=client.display_name,
                    created_by=created_by,
                )
                _lines_replace(invoice, lines)
                return invoice
        except IntegrityError:
            # Another request took the same number between our read and our insert: the
            # unique constraint caught it, so read the new maximum and try again.
            if attempt == NUMBER_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@transaction.atomic
def invoice_update(
    *,
    invoice: Invoice,
    client: Client,
    due_date: date,
    lines: Sequence[LineData],
    currency: str,
    issue_date: date,
    notes: str,
) -> Invoice:
    """Change a draft. A sent invoice is a record the client holds: void it instead."""
    if invoice.status != Invoice.Status.DRAFT:
        raise InvoiceError(_("Only a draft can be edited. Void this invoice and create a new one."))
    if client.firm_id != invoice.firm_id:
        raise InvoiceError(_("This client belongs to another firm."))
    invoice.client = client
    invoice.client_name = client.display_name
    invoice.due_date = due_date
    invoice.currency = currency
    invoice.issue_date = issue_date
    invoice.notes = notes
    invoice.save()
    _lines_replace(invoice, lines)
    return invoice


@transaction.atomic
def invoice_void(*, invoice: Invoice) -> Invoice:
    # Locked: a sender claiming this invoice's deliveries holds the row (`delivery.sender`),
    # so either it sees the void and cancels them, or the void waits for its claim.
    current = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if current.status == Invoice.Status.PAID:
        raise InvoiceError(_("A paid invoice cannot be voided."))
    invoice.status = Invoice.Status.VOID
    invoice.save(update_fields=["status"])
    # Nobody should be asked to pay a void invoice through a link they still hold.
    PayLink.objects.filter(invoice=invoice, revoked_at=None).update(revoked_at=timezone.now())
    return invoice


def billing_settings_update(
    *,
    firm: Firm,
    payment_instructions: str,
    currency: str,
    legal_name: str = "",
    address: str = "",
    tax_id: str = "",
    bank_details: str = "",
) -> FirmBillingSettings:
    found, _created = FirmBillingSettings.objects.update_or_create(
        firm=firm,
        defaults={
            "payment_instructions": payment_instructions,
            "currency": currency.upper(),
            "legal_name": legal_name.strip(),
            "address": address.strip(),
            "tax_id": tax_id.strip(),
            "bank_details": bank_details.strip(),
        },
    )
    return found
