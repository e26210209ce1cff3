"""Invoices, their Pay Now links and payments, and what happened to every email sent.

Money is Decimal; an issued invoice is voided, never deleted; a delivery never moves
backwards: events are kept as they arrive, and the delivery's state is the strongest
outcome seen so far.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

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
        return reverse("invoicing:invoice_detail", args=[self.pk])

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
        # Half-cents round up, as invoices and accountants expect (not banker's rounding).
        return (self.quantity * self.unit_price).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class Delivery(models.Model):
    """One email of one invoice to one recipient address, and what became of it."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        # Claimed by a sender: its Pay Now link is stored and the email is about to go, or
        # went, over SMTP; the outcome is recorded moments later.
        SENDING = "sending", _("Sending")
        # The sender stopped (a crash) between claiming and recording: the email went out at
        # most once, and nobody knows whether it did. Shown as a problem; Resend is the fix.
        UNKNOWN = "unknown", _("Outcome unknown")
        SENT = "sent", _("Sent")
        DEFERRED = "deferred", _("Delayed")
        DELIVERED = "delivered", _("Delivered")
        OPENED = "opened", _("Opened")
        CLICKED = "clicked", _("Link clicked")
        SOFT_BOUNCED = "soft_bounced", _("Bounced (temporary)")
        BOUNCED = "bounced", _("Bounced")
        REJECTED = "rejected", _("Rejected")
        COMPLAINED = "complained", _("Marked as spam")
        SUPPRESSED = "suppressed", _("Not sent: address blocked")
        FAILED = "failed", _("Not sent")
        # The invoice was voided or paid after this email was queued: not sent, on purpose.
        CANCELLED = "cancelled", _("Not sent: cancelled")

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="deliveries")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="deliveries")
    address = models.CharField(max_length=320)
    normalized = models.CharField(max_length=320)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # A stable problem code (PROBLEMS.md) while this delivery is in trouble, else "".
    problem_code = models.CharField(max_length=60, blank=True)
    is_test = models.BooleanField(default=False)
    message_id = models.CharField(max_length=255, blank=True, db_index=True)
    esp_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    verp_token = models.CharField(max_length=40, unique=True)
    # When a sender claimed it (status "sending"): a claim older than the lease is a sender
    # that died, see `invoicing.services.deliveries_sending_expire`.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The claim's own token while "sending": the sender renews and records only rows that
    # still carry it, so a sender whose lease ran out records nothing over what replaced it.
    lease_token = models.CharField(max_length=32, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        ordering = ["-created", "-pk"]
        indexes = [
            models.Index(fields=["firm", "normalized"], name="delivery_address_idx"),
            # Serves the Problems views: a firm's deliveries in trouble.
            models.Index(
                fields=["firm", "problem_code"],
                condition=~Q(problem_code=""),
                name="delivery_problem_idx",
            ),
            # Serves the watchdog: claims in flight, oldest first (normally none or a few).
            models.Index(
                fields=["claimed_at"],
                condition=Q(status="sending"),
                name="delivery_sending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice} → {self.address}"


class DeliveryEvent(models.Model):
    class Source(models.TextChoices):
        PORTAL = "portal", _("Portal")
        SMTP = "smtp", _("Sending server")
        WEBHOOK = "webhook", _("Email service")
        DSN = "dsn", _("Bounce message")

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20)  # one of Delivery.Status's values
    source = models.CharField(max_length=10, choices=Source.choices)
    # The sender's id of this event, so a webhook retried ten times is recorded once.
    event_id = models.CharField(max_length=255, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    reply_code = models.CharField(max_length=3, blank=True)
    status_code = models.CharField(max_length=16, blank=True)  # enhanced status, e.g. 5.1.1
    reason = models.CharField(max_length=40, blank=True)
    diagnostic = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["occurred_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "event_id"],
                condition=~Q(event_id=""),
                name="deliveryevent_unique_source_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.source})"


class PayLink(models.Model):
    """A Pay Now link of one delivery. Only the token's hash is stored."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="pay_links")
    delivery = models.OneToOneField(
        Delivery, null=True, blank=True, on_delete=models.CASCADE, related_name="pay_link"
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


class Suppression(models.Model):
    """An address the firm's invoices are no longer sent to, and why."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", _("The address does not exist")
        COMPLAINT = "complaint", _("The recipient marked an email as spam")
        REPEATED_SOFT = "repeated_soft", _("Repeated temporary failures")
        MANUAL = "manual", _("Blocked by hand")

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    normalized = models.CharField(max_length=320)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    source_event = models.ForeignKey(
        DeliveryEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    removal_note = models.TextField(blank=True)

    class Meta:
        constraints = [
            # One active suppression per address and firm; removed ones stay as history.
            models.UniqueConstraint(
                fields=["firm", "normalized"],
                condition=Q(removed_at__isnull=True),
                name="suppression_one_active",
            ),
        ]

    def __str__(self) -> str:
        return self.normalized


class WebhookEvent(models.Model):
    """An ESP tracking event as received, processed later by a task: never lost."""

    esp = models.CharField(max_length=30)
    event_id = models.CharField(max_length=255, blank=True)
    payload = models.JSONField()
    received = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["received"],
                condition=Q(processed_at__isnull=True),
                name="webhookevent_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.esp} {self.event_id}"


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


class BounceMailboxCursor(models.Model):
    """How far the bounce mailbox has been read: one row per mailbox (host, user, folder).

    IMAP UIDs only mean something together with the folder's UIDVALIDITY; when the server
    changes it, the mailbox is read again from the start (events are idempotent, so nothing
    is recorded twice).
    """

    mailbox = models.CharField(max_length=400, unique=True)
    uidvalidity = models.BigIntegerField(default=0)
    last_uid = models.BigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.mailbox} @ {self.uidvalidity}:{self.last_uid}"
