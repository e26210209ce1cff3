"""Invoices, their Pay Now links and payments, and the firm's billing settings.

Money is Decimal; an issued invoice is voided, never deleted. What happened to every email
sent (deliveries, their events, suppressions, webhook events) is in
`invoicing.delivery.models`, imported at the end so that Django registers those models with
this app (label ``invoicing``, same tables).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.links import url_id
from portal.models import Client, Firm


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SENT = "sent", _("Sent")
        VIEWED = "viewed", _("Viewed")
        PAID = "paid", _("Paid")
        VOID = "void", _("Void")

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="invoices")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="invoices")
    number = models.PositiveIntegerField(_("number"))
    currency = models.CharField(_("currency"), max_length=3, default="EUR")
    issue_date = models.DateField(_("issue date"), default=timezone.localdate)
    due_date = models.DateField(_("due date"))
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.DRAFT
    )
    notes = models.TextField(_("notes"), blank=True)
    # Snapshot at issue: the invoice keeps saying what it said when it was sent.
    client_name = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # Set by whoever sends the "invoice paid" notice, before it goes: a redelivered task
    # finds it set and sends nothing (the notice goes at most once).
    paid_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("invoice")
        verbose_name_plural = _("invoices")
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["firm", "number"], name="invoice_number_per_firm"),
        ]

    def __str__(self) -> str:
        return f"#{self.number}"

    def get_absolute_url(self) -> str:
        return url_id("invoicing:invoice_detail", self.pk)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines.all()), Decimal("0.00"))


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    description = models.CharField(_("description"), max_length=500)
    quantity = models.DecimalField(_("quantity"), max_digits=12, decimal_places=2, default=1)
    unit_price = models.DecimalField(_("unit price"), max_digits=12, decimal_places=2)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return self.description

    @property
    def amount(self) -> Decimal:
        return line_amount(self.quantity, self.unit_price)


def line_amount(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """What one invoice line comes to. Half-cents round up, as invoices and accountants
    expect (not banker's rounding)."""
    return (quantity * unit_price).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class PayLink(models.Model):
    """A Pay Now link of one delivery. Only the token's hash is stored."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="pay_links")
    delivery = models.OneToOneField(
        "invoicing.Delivery",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="pay_link",
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_viewed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"link for {self.invoice}"

    def is_usable(self) -> bool:
        """Whether the link still opens its invoice: not revoked, not expired, and the
        invoice not void (reads ``invoice``)."""
        return (
            self.revoked_at is None
            and self.expires_at > timezone.now()
            and self.invoice.status != Invoice.Status.VOID
        )


class Payment(models.Model):
    """Money received. Always kept, even when it cannot count toward its invoice (see
    ``problem_code``): a client who paid is never made to look as if they had not."""

    class Problem(models.TextChoices):
        NONE = "", ""
        # The invoice was voided before the money arrived: refund it or re-issue.
        VOID_INVOICE = "payment.void_invoice", _("Paid on a void invoice")
        # Paid in another currency than the invoice's: not counted toward it.
        CURRENCY_MISMATCH = "payment.currency_mismatch", _("Paid in another currency")
        # More than was still owed (a second checkout, a transfer on top of a card payment).
        OVERPAID = "payment.overpaid", _("More than the invoice's total was paid")

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    provider = models.CharField(max_length=30)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=255, blank=True)
    # Why this payment needs a person (refund, re-issue); "" when it simply counts.
    problem_code = models.CharField(max_length=40, blank=True, choices=Problem.choices)
    # The form submission that recorded it by hand: a double submit records one payment.
    submission_key = models.CharField(max_length=64, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "reference"],
                condition=~Q(reference=""),
                name="payment_unique_provider_reference",
            ),
            models.UniqueConstraint(
                fields=["invoice", "submission_key"],
                condition=~Q(submission_key=""),
                name="payment_unique_submission",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


class FirmBillingSettings(models.Model):
    """What a firm tells its clients about paying, kept here so `portal` knows nothing of it."""

    firm = models.OneToOneField(Firm, on_delete=models.CASCADE, related_name="billing_settings")
    payment_instructions = models.TextField(
        _("payment instructions"),
        blank=True,
        help_text=_("Shown on the Pay Now page: bank account, reference to quote, and so on."),
    )
    currency = models.CharField(_("default currency"), max_length=3, default="EUR")
    # What an invoice must say about who issues it: printed, on Pay Now and in the email.
    legal_name = models.CharField(
        _("business name on invoices"),
        max_length=200,
        blank=True,
        help_text=_("Your firm's registered name, if it differs from its name in the portal."),
    )
    address = models.TextField(_("business address"), blank=True)
    tax_id = models.CharField(_("business or VAT ID"), max_length=50, blank=True)
    bank_details = models.TextField(
        _("bank details"),
        blank=True,
        help_text=_("Account holder, IBAN and BIC (or account number): where clients transfer to."),
    )

    class Meta:
        verbose_name = _("billing settings")
        verbose_name_plural = _("billing settings")

    def __str__(self) -> str:
        return f"billing settings of {self.firm}"


# Django registers an app's models when it imports `<app>.models`: the delivery models live in
# their own module and are registered from here.
from invoicing.delivery.models import (  # noqa: E402, F401
    BounceMailboxCursor,
    Delivery,
    DeliveryEvent,
    Suppression,
    WebhookEvent,
)
