from __future__ import annotations

from django.conf import settings

from portal.dns import make_resolver
from portal.models import Firm
from troubleshooting.domain_checks import SendingService, check_sending_domain
from troubleshooting.models import DomainCheckRun, ProblemNote


def sending_service() -> SendingService:
    return SendingService(
        spf_include=settings.PORTAL_SPF_INCLUDE,
        sending_ips=tuple(settings.PORTAL_SENDING_IPS),
        dkim=tuple(settings.PORTAL_DKIM_SELECTORS),
    )


def domain_checks_run(*, firm: Firm) -> DomainCheckRun | None:
    """Check the firm's sending domain now and keep the result (None: no domain set)."""
    if not firm.sending_domain:
        return None
    results = check_sending_domain(firm.sending_domain, sending_service(), make_resolver())
    return DomainCheckRun.objects.create(
        firm=firm, domain=firm.sending_domain, results=[r.as_dict() for r in results]
    )


def problem_mark_handled(*, firm: Firm, subject: str, code: str, note: str, author) -> ProblemNote:
    return ProblemNote.objects.create(
        firm=firm, subject=subject[:200], code=code, note=note, author=author
    )
