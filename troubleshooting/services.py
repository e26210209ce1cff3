from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from portal.dns import make_resolver
from portal.models import Firm
from troubleshooting.domain_checks import SendingService, check_sending_domain_with_ttl
from troubleshooting.models import DomainCheckRun, ProblemNote


def sending_service() -> SendingService:
    return SendingService(
        spf_include=settings.PORTAL_SPF_INCLUDE,
        sending_ips=tuple(settings.PORTAL_SENDING_IPS),
        dkim=tuple(settings.PORTAL_DKIM_SELECTORS),
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
        firm.sending_domain, sending_service(), make_resolver()
    )
    trust = MAX_TRUST if ttl is None else timedelta(seconds=ttl)
    trust = min(max(trust, MIN_RECHECK), MAX_TRUST)
    return DomainCheckRun.objects.create(
        firm=firm,
        domain=firm.sending_domain,
        results=[r.as_dict() for r in results],
        expires_at=timezone.now() + trust,
    )


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
