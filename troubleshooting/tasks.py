from celery import shared_task

from portal.models import Firm
from troubleshooting.digest import firm_digests_send, firms_due_for_digest
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


@shared_task(name="troubleshooting.send_firm_digests", ignore_result=True)
def send_firm_digests(firm_id: int) -> None:
    firm = Firm.objects.filter(pk=firm_id).first()
    if firm is not None:
        firm_digests_send(firm=firm)


@shared_task(name="troubleshooting.send_weekly_digests", ignore_result=True)
def send_weekly_digests() -> None:
    """Hourly: the weekly problems email of each firm where it is Monday morning now (each
    firm in its own task; recipients who had this week's are skipped)."""
    for firm_id in firms_due_for_digest():
        send_firm_digests.delay(firm_id)
