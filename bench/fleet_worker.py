"""The Celery app for bench_sync_fleet.py's workers: the portal's app, with every mailbox
sync recorded (start, end, the next due time) to a file per process. Not a bench itself.

Started as ``celery -A fleet_worker worker -Q sync ...`` with bench/ on PYTHONPATH; the
recording is installed in each worker process once Django is set up.
"""

from __future__ import annotations

import json
import os
import time

from celery.signals import worker_process_init

from portal.celery import app

__all__ = ["app"]


@worker_process_init.connect
def _record_syncs(**_kwargs: object) -> None:
    import mailsync.tasks as tasks
    from mailsync.models import MailboxConnection

    real = tasks.mailbox_sync
    log_dir = os.environ["FLEET_LOG_DIR"]

    def recorded(connection, **kwargs):  # type: ignore[no-untyped-def]
        start = time.time()
        report = real(connection, **kwargs)
        end = time.time()
        next_at = (
            MailboxConnection.objects.filter(pk=connection.pk)
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        entry = {
            "id": connection.pk,
            "start": start,
            "end": end,
            "new": report.new,
            "state": report.state,
            "next": next_at.timestamp() if next_at else None,
            "pid": os.getpid(),
        }
        with open(os.path.join(log_dir, f"{os.getpid()}.jsonl"), "a") as out:
            out.write(json.dumps(entry) + "\n")
        return report

    tasks.mailbox_sync = recorded
