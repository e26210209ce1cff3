"""What this app stores itself: domain check runs and people's notes on problems.

Problems of mail sync and delivery are read from those apps' own records (see selectors.py);
only domain checks have no other home.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from portal.models import Firm


class DomainCheckRun(models.Model):
    """One run of every check on a firm's sending domain; the newest run is the truth."""

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    domain = models.CharField(max_length=253)
    results = models.JSONField(default=list)  # CheckResult.as_dict() per check
    created = models.DateTimeField(auto_now_add=True)
    # Until when the DNS answers behind these results may be trusted (their shortest TTL).
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [models.Index(fields=["firm", "-created"], name="domaincheck_latest_idx")]

    def __str__(self) -> str:
        return f"{self.domain} @ {self.created:%Y-%m-%d %H:%M}"

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.results if not r["ok"] and r["problem_code"]]

    @property
    def aligned(self) -> bool:
        """Whether the portal's mail From this domain passes DMARC (SPF or DKIM aligned);
        True when nothing was there to align with (no sending service configured)."""
        return next((r["ok"] for r in self.results if r["name"] == "alignment"), True)

    @property
    def authenticates_sender(self) -> bool:
        """Whether the domain is proven to be this firm's (its verification TXT record) and
        mail From it sent by the portal passes DKIM (aligned: the
        selectors sign for the domain itself) and SPF, so invoices may leave from the firm's
        own domain. SPF alone is not enough: the envelope sender is the platform's bounce
        address, so only DKIM aligns with From. A DNS check that did not answer is not a
        pass. A missing DMARC record alone does not stop it (nothing is enforced then)."""
        by_name = {r["name"]: r for r in self.results}
        dkim = [r for name, r in by_name.items() if name.startswith("dkim:")]
        dmarc = by_name.get("dmarc")
        return (
            by_name.get("ownership", {}).get("ok") is True
            and bool(dkim)
            and all(r["ok"] for r in dkim)
            and by_name.get("spf", {}).get("ok") is True
            and by_name.get("alignment", {"ok": True})["ok"]
            and (dmarc is None or dmarc["ok"] or dmarc["problem_code"] == "domain.dmarc_missing")
        )


class ProblemNote(models.Model):
    """A member marked a problem as handled, with a note. Shown until the problem clears."""

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    subject = models.CharField(max_length=200)  # e.g. "delivery:42", "domain:spf"
    code = models.CharField(max_length=60)
    note = models.TextField(_("note"), blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["firm", "subject"], name="problemnote_subject_idx")]

    def __str__(self) -> str:
        return f"{self.code} {self.subject}"


class Incident(models.Model):
    """A note an operator publishes on the status page while something is wrong."""

    message = models.TextField(_("message"))
    active = models.BooleanField(_("shown on the status page"), default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.message[:60]


class AddressDomainCheck(models.Model):
    """Whether a domain used in the firm's contact addresses can receive mail (MX)."""

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    domain = models.CharField(max_length=253)
    ok = models.BooleanField()
    summary = models.CharField(max_length=300, blank=True)
    answers = models.JSONField(default=list)
    checked = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["firm", "domain"], name="addressdomain_unique")
        ]
        indexes = [
            # Serves the Problems views: the firm's domains that take no mail.
            models.Index(
                fields=["firm"], condition=models.Q(ok=False), name="addressdomain_bad_idx"
            )
        ]

    def __str__(self) -> str:
        return self.domain


class DigestSent(models.Model):
    """The weekly problems email went to this person for this firm in this ISO week.

    Inserted in the transaction that sends the email: two workers racing on one recipient
    meet at the unique constraint and only one sends. ``problems`` keeps what the email
    listed as open, so next week's can say what resolved itself."""

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    iso_year = models.PositiveSmallIntegerField()
    iso_week = models.PositiveSmallIntegerField()
    problems = models.JSONField(default=list)  # [{"subject", "code", "label"}] open when sent
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["firm", "user", "iso_year", "iso_week"], name="digestsent_once_a_week"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.firm_id} {self.iso_year}-W{self.iso_week:02d}"


class DeliveryProblemsVersion(models.Model):
    """A number the database raises whenever anything the Problems dashboard's delivery
    counts read changes for a firm: a delivery's problem state, a contact address, which
    client a contact belongs to, a client's name, a checked address domain. Counts cached
    under one version are current for as long as the version stands (see
    troubleshooting.selectors.delivery_code_counts); delivery cards, while it and `cards`
    stand (troubleshooting.selectors._cached_cards).

    Kept by triggers (migration 0006), so every writer counts: forms, tasks, ``update()``,
    COPY. The row is raised when the writing transaction commits (a deferred trigger), so
    a version that is visible means every change it stands for is committed, and writers
    of one firm queue for the row only for the moment of their commit.

    ``firm_id`` holds no foreign key: a firm's deletion leaves its row behind, harmless
    (the cache key also names the firm's creation time, so a reused id starts afresh).
    """

    firm_id = models.BigIntegerField(primary_key=True)
    version = models.BigIntegerField(default=0)
    # Raised, beside `version`, when what a delivery problem's card shows changes and the
    # counts do not (a failure event more, an address as written, a domain checked again;
    # migration 0008): the cards cached under (version, cards) are current while both stand.
    cards = models.BigIntegerField(default=0, db_default=0)

    def __str__(self) -> str:
        return f"{self.firm_id}: {self.version}.{self.cards}"
