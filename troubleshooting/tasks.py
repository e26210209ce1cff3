from celery import shared_task

from portal.models import Firm
from troubleshooting.services import (
    address_domains_check,
    domain_checks_run,
    firms_due_for_domain_check,
)


@shared_task(name="troubleshooting.check_domain", ignore_result=True)
def check_firm_domain(firm_id: int) -> None:
    firm = Firm.objects.filter(pk=firm_id).first()
    if firm is not None:
        domain_checks_run(firm=firm)


@shared_task(name="troubleshooting.check_all_domains", ignore_result=True)
def check_all_domains() -> None:
    """Re-check domains whose answers' TTL ran out, each in its own task (a slow DNS server
    holds up only its own firm)."""
    for firm_id in firms_due_for_domain_check():
        check_firm_domain.delay(firm_id)


@shared_task(name="troubleshooting.check_address_domains", ignore_result=True)
def check_address_domains() -> None:
    """Daily: does every domain in the firms' contact addresses still take mail?"""
    for firm in Firm.objects.all().only("pk"):
        address_domains_check(firm=firm)
