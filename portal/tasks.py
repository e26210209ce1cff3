from celery import shared_task

from portal.services import heartbeat_record


@shared_task(name="portal.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Beat sends this every minute; a worker running it proves the queue is served."""
    heartbeat_record(name="worker")


@shared_task(name="portal.sweep_blobs", ignore_result=True)
def sweep_blobs() -> None:
    """Delete blobs no row names any more and older than the grace period (see portal.blobs)."""
    from portal.blobs import blobs_sweep

    blobs_sweep()
