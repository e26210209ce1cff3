from celery import shared_task

from portal.models import Firm
from troubleshooting.services import domain_checks_run


@shared_task(name="troubleshooting.check_domain", ignore_result=True)
def check_firm_domain(firm_id: int) -> None:
    firm = Firm.objects.filter(pk=firm_id).first()
    if firm is not None:
        domain_checks_run(firm=firm)


@shared_task(name="troubleshooting.check_all_domains", ignore_result=True)
def check_all_domains() -> None:
    """Daily: re-check every firm's domain, each in its own task so one slow DNS is alone."""
    for firm_id in Firm.objects.exclude(sending_domain="").values_list("pk", flat=True):
        check_firm_domain.delay(firm_id)
