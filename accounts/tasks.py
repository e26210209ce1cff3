from celery import shared_task

from accounts.support import grants_expired_notify


@shared_task(name="accounts.notify_expired_support_grants", ignore_result=True)
def notify_expired_support_grants() -> int:
    return grants_expired_notify()
