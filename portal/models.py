"""The practice itself: firms, their clients, the clients' contacts and documents."""

from __future__ import annotations

import uuid
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from portal.links import url_id


def validate_time_zone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(
            _("%(value)s is not a time zone. Use a name such as Europe/Helsinki."),
            params={"value": value},
        )


class Firm(models.Model):
    name = models.CharField(_("name"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=80, unique=True)
    # The sending identity is filled in Firm Settings; the domain checks read it.
    sending_domain = models.CharField(_("sending domain"), max_length=253, blank=True)
    sender_name = models.CharField(_("sender name"), max_length=200, blank=True)
    reply_to_email = models.EmailField(_("reply-to address"), blank=True)
    # The sending domain as of its newest domain check that passed SPF, DKIM and alignment
    # (troubleshooting writes it). Invoices leave from the firm's domain only while this
    # equals `sending_domain`, so changing the domain falls back to the platform's sender.
    sending_domain_verified = models.CharField(max_length=253, blank=True, editable=False)
    # Until when the support team may enter (`accounts.support`'s grants keep it): the
    # owners' banner reads it here, with no query of its own.
    support_access_until = models.DateTimeField(null=True, blank=True, editable=False)
    # What the firm's clients read (invoice emails) unless a client has a language of its own;
    # blank means the portal's LANGUAGE_CODE.
    language = models.CharField(
        _("language for clients"),
        max_length=10,
        blank=True,
        choices=settings.LANGUAGES,
        help_text=_("The language of emails to clients who have no language of their own."),
    )
    # The firm's own clock: when its weekly problems email goes out (Monday morning there).
    # Blank: the platform's TIME_ZONE.
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        validators=[validate_time_zone],
        help_text=_("For example Europe/Helsinki. The weekly problems email arrives Monday at 8."),
    )
    # Whether owners must sign in with a second factor; empty follows the platform's default
    # (MFA_REQUIRED_FOR_OWNERS: on in production), until an owner chooses in Firm Settings.
    owners_must_use_mfa = models.BooleanField(
        _("owners must use two-factor authentication"), null=True, blank=True
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("firm")
        verbose_name_plural = _("firms")

    def __str__(self) -> str:
        return self.name

    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone or settings.TIME_ZONE)

    def owners_need_mfa(self) -> bool:
        if self.owners_must_use_mfa is None:
            return settings.MFA_REQUIRED_FOR_OWNERS
        return self.owners_must_use_mfa

    def domain_ownership_token(self) -> str:
        """What the firm publishes in a TXT record to prove the sending domain is its own.
        Derived (not stored) from the firm, the domain and SECRET_KEY: another firm cannot
        guess it, and a new domain gets a new one. Rotating SECRET_KEY changes it (the
        firm then falls back to the platform's sender until it publishes the new one)."""
        digest = salted_hmac(
            "portal.Firm.domain_ownership_token", f"{self.pk}:{self.sending_domain.lower()}"
        )
        return digest.hexdigest()[:32]

    def domain_ownership_record(self) -> str:
        """The TXT record value proving the sending domain is this firm's."""
        return f"practice-portal-verification={self.domain_ownership_token()}"

    def own_sender_address(self) -> str | None:
        """The address on the firm's own verified domain invoices leave from, or None (then
        the platform's sender is used): the reply-to address when it is on that domain, else
        FIRM_SENDER_LOCAL_PART@domain."""
        domain = self.sending_domain
        if not domain or self.sending_domain_verified != domain:
            return None
        if self.reply_to_email.lower().endswith("@" + domain):
            return self.reply_to_email
        return f"{settings.FIRM_SENDER_LOCAL_PART}@{domain}"


class Client(models.Model):
    class Kind(models.TextChoices):
        INDIVIDUAL = "individual", _("Individual")
        COMPANY = "company", _("Company")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        ARCHIVED = "archived", _("Archived")

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="clients")
    display_name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("type"), max_length=20, choices=Kind.choices, default=Kind.COMPANY)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.ACTIVE
    )
    # The language the firm writes to this client in (invoice emails); blank: the firm's.
    language = models.CharField(
        _("language"),
        max_length=10,
        blank=True,
        choices=settings.LANGUAGES,
        help_text=_("The language of invoice emails to this client. Empty: the firm's language."),
    )
    # Printed on the client's invoices.
    billing_address = models.TextField(_("billing address"), blank=True)
    tax_id = models.CharField(_("business or VAT ID"), max_length=50, blank=True)
    # How many of the client's contact addresses receive invoices. The database keeps it
    # (triggers of portal migration 0012 on portal_contactaddress, portal_contact and this
    # table recount it on every write, whoever writes: forms, bulk_create, update(), deletes,
    # COPY); a value written here from Python is replaced by the count. Read, never written.
    invoice_addresses = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    # What a client search matches (portal.selectors.clients_matching): the name, the
    # contacts' names and their addresses, one to a line, in capitals, under one trigram
    # index. Kept by the database like invoice_addresses (triggers of portal migration
    # 0014). Read, never written.
    search_text = models.TextField(default="", db_default="", editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("client")
        verbose_name_plural = _("clients")
        indexes = [
            # Serves the client list: a firm's clients by status, ordered by name.
            models.Index(Lower("display_name"), "firm", "status", name="client_firm_name_idx"),
            # Serves troubleshooting.selectors._no_recipient_problems (the Problems
            # dashboard): a firm's clients with no address that receives invoices.
            models.Index(
                fields=["firm"],
                condition=models.Q(invoice_addresses=0),
                name="client_no_invoice_address_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name

    def get_absolute_url(self) -> str:
        return url_id("portal:client_detail", self.pk)


class Contact(models.Model):
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(_("name"), max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


class ContactAddress(models.Model):
    """One email address of a contact.

    `firm` repeats the contact's firm so that "which clients does this address belong to"
    (mail linking, suppression checks) is one indexed lookup.
    """

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="addresses")
    address = models.CharField(_("email address"), max_length=320)
    normalized = models.CharField(max_length=320, editable=False)
    is_primary = models.BooleanField(_("primary"), default=False)
    receives_invoices = models.BooleanField(_("receives invoices"), default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("contact address")
        verbose_name_plural = _("contact addresses")
        ordering = ["-is_primary", "address", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "normalized"], name="contactaddress_unique_per_contact"
            ),
        ]
        indexes = [models.Index(fields=["firm", "normalized"], name="contactaddress_lookup_idx")]

    def __str__(self) -> str:
        return self.address


def _document_path(instance: Document, filename: str) -> str:
    # Stored under a random name: the original name is kept in the row, never trusted as a path.
    return f"documents/{instance.client.firm_id}/{uuid.uuid4().hex}"


class Document(models.Model):
    class Source(models.TextChoices):
        UPLOAD = "upload", _("Uploaded")
        EMAIL = "email", _("From email")

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="documents")
    file = models.FileField(upload_to=_document_path)
    original_name = models.CharField(_("file name"), max_length=255)
    content_type = models.CharField(max_length=127, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    source = models.CharField(
        _("source"), max_length=20, choices=Source.choices, default=Source.UPLOAD
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("document")
        verbose_name_plural = _("documents")
        ordering = ["-created", "-pk"]
        constraints = [
            # A client has each file once, however many messages (from however many of the
            # firm's mailboxes, synced at the same time) or uploads brought it.
            models.UniqueConstraint(fields=["client", "sha256"], name="document_unique_content")
        ]

    def __str__(self) -> str:
        return self.original_name


class OutboxEmail(models.Model):
    """A message the local outbox backend kept instead of sending (development default)."""

    firm = models.ForeignKey(Firm, null=True, blank=True, on_delete=models.CASCADE)
    recipient_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    subject = models.CharField(max_length=998)
    from_email = models.CharField(max_length=998)
    recipients = models.TextField()
    raw = models.BinaryField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.subject


class Heartbeat(models.Model):
    """When a background process last proved it was alive (worker, beat)."""

    name = models.CharField(max_length=100, unique=True)
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return self.name
