from celery import shared_task

from portal.services import heartbeat_record


@shared_task(name="portal.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Beat sends this every minute; a worker running it proves the queue is served."""
    heartbeat_record(name="worker")
