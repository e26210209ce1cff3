"""What happened to every invoice email: deliveries, their events, suppressions.

A delivery never moves backwards: events are kept as they arrive, and the delivery's state
is the strongest outcome seen so far. These models belong to the ``invoicing`` app (their
tables are ``invoicing_*``); `invoicing.models` imports this module so Django registers them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.models import Client, Firm


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
    invoice = models.ForeignKey(
        "invoicing.Invoice", on_delete=models.CASCADE, related_name="deliveries"
    )
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="deliveries")
    address = models.CharField(max_length=320)
    normalized = models.CharField(max_length=320)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # A stable problem code (PROBLEMS.md) while this delivery is in trouble, else "".
    problem_code = models.CharField(max_length=60, blank=True)
    is_test = models.BooleanField(default=False)
    # True once a later real (not test) delivery to the same client address exists: its
    # problem, if any, is no longer current. Kept by the database itself (triggers of
    # migration invoicing 0006 on insert and delete), so every path that writes deliveries,
    # one by one, in bulk or by COPY, keeps it without a query of its own.
    superseded = models.BooleanField(default=False, db_default=False)
    # Whether the client still has this address (a contact of it with the same normalized
    # address): a problem of an address the client no longer has is not current. Kept by
    # the database (triggers of migration invoicing 0009 on this table, the contacts and
    # their addresses). Read, never written.
    address_kept = models.BooleanField(default=True, db_default=True, editable=False)
    # The domain of the From the email left with, set when the sender claims it: the firm's
    # own once its domain authenticates the portal's mail, else the platform's. Whether
    # the recipient's provider judges the mail by the firm's DMARC depends on it. Empty:
    # claimed before this was recorded.
    from_domain = models.CharField(max_length=253, blank=True, default="", db_default="")
    message_id = models.CharField(max_length=255, blank=True, db_index=True)
    esp_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    verp_token = models.CharField(max_length=40, unique=True)
    # When a sender claimed it (status "sending"): a claim older than the lease is a sender
    # that died, see `invoicing.delivery.sender.deliveries_sending_expire`.
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
            # Current delivery problems (troubleshooting.selectors._current_deliveries: the
            # Problems dashboard's counts, a code's cards): only problems nothing replaced,
            # of addresses the client still has.
            models.Index(
                fields=["firm", "problem_code"],
                condition=~Q(problem_code="")
                & Q(superseded=False, is_test=False, address_kept=True),
                name="delivery_current_problem_idx",
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
