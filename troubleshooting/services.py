from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from portal.dns import make_resolver
from portal.models import ContactAddress, Firm
from troubleshooting.domain_checks import (
    SendingService,
    check_mx,
    check_sending_domain_with_ttl,
)
from troubleshooting.models import AddressDomainCheck, DomainCheckRun, ProblemNote


def _return_path_domain() -> str | None:
    """Where the portal's invoice mail says it comes from in the envelope (Return-Path):
    the VERP bounce domain when one is set; with plain SMTP otherwise the From address itself
    (None); an ESP uses its own bounce domain ("")."""
    if settings.BOUNCE_ADDRESS:
        return settings.BOUNCE_ADDRESS.rsplit("@", 1)[-1].lower()
    if settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend":
        return None
    return ""


def sending_service() -> SendingService:
    return SendingService(
        spf_include=settings.PORTAL_SPF_INCLUDE,
        sending_ips=tuple(settings.PORTAL_SENDING_IPS),
        dkim=tuple(settings.PORTAL_DKIM_SELECTORS),
        return_path_domain=_return_path_domain(),
    )


# Answers are trusted for their TTL, but never re-checked more often than every 5 minutes
# nor trusted longer than a day (a record fixed by the firm's IT should show up by tomorrow).
MIN_RECHECK = timedelta(minutes=5)
MAX_TRUST = timedelta(days=1)


def domain_checks_run(*, firm: Firm) -> DomainCheckRun | None:
    """Check the firm's sending domain now and keep the result (None: no domain set)."""
    if not firm.sending_domain:
        return None
    results, ttl = check_sending_domain_with_ttl(
        firm.sending_domain,
        sending_service(),
        make_resolver(),
        ownership_record=firm.domain_ownership_record(),
    )
    trust = MAX_TRUST if ttl is None else timedelta(seconds=ttl)
    trust = min(max(trust, MIN_RECHECK), MAX_TRUST)
    run = DomainCheckRun.objects.create(
        firm=firm,
        domain=firm.sending_domain,
        results=[r.as_dict() for r in results],
        expires_at=timezone.now() + trust,
    )
    verified = run.domain if run.authenticates_sender else ""
    if firm.sending_domain_verified != verified:
        firm.sending_domain_verified = verified
        Firm.objects.filter(pk=firm.pk).update(sending_domain_verified=verified)
    return run


def firms_due_for_domain_check(*, now: datetime | None = None) -> list[int]:
    """Firms with a sending domain whose latest check is missing, expired or for another
    domain (the firm changed it)."""
    now = now or timezone.now()
    latest = DomainCheckRun.objects.filter(firm=OuterRef("pk")).order_by("-created")
    firms = Firm.objects.exclude(sending_domain="").annotate(
        checked_domain=Subquery(latest.values("domain")[:1]),
        checked_until=Subquery(latest.values("expires_at")[:1]),
    )
    return [
        firm.pk
        for firm in firms
        if firm.checked_until is None
        or firm.checked_until <= now
        or firm.checked_domain != firm.sending_domain
    ]


def problem_mark_handled(*, firm: Firm, subject: str, code: str, note: str, author) -> ProblemNote:
    return ProblemNote.objects.create(
        firm=firm, subject=subject[:200], code=code, note=note, author=author
    )


# Client domains change rarely; a week between MX checks of the same domain is plenty, and
# a new domain is checked on the next run.
ADDRESS_DOMAIN_RECHECK = timedelta(days=7)


def address_domains_check(*, firm: Firm, limit: int = 200) -> int:
    """Check the mail servers of the domains in the firm's contact addresses (MX, then A),
    oldest first; returns how many were checked. Temporary DNS failures are not recorded."""
    now = timezone.now()
    domains = {
        address.rsplit("@", 1)[-1]
        for address in ContactAddress.objects.filter(firm=firm).values_list("normalized", flat=True)
    }
    fresh = set(
        AddressDomainCheck.objects.filter(
            firm=firm, checked__gt=now - ADDRESS_DOMAIN_RECHECK
        ).values_list("domain", flat=True)
    )
    resolver = make_resolver()
    checked = 0
    for domain in sorted(domains - fresh)[:limit]:
        result = check_mx(domain, resolver)
        if not result.ok and not result.problem_code:
            continue  # DNS did not answer: try again next run rather than report a guess
        AddressDomainCheck.objects.update_or_create(
            firm=firm,
            domain=domain,
            defaults={
                "ok": result.ok,
                "summary": result.summary[:300],
                "answers": result.answers,
                "checked": now,
            },
        )
        checked += 1
    return checked
