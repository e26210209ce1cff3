"""Every periodic task the portal runs, declared in code.

`manage.py setup_schedules` writes these into django-celery-beat's tables; entries under our
prefix that are no longer declared here are disabled, so the database never drifts from code.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

PREFIX = "portal: "


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: int


SCHEDULES = [
    Schedule("worker heartbeat", "portal.heartbeat", 60),
    Schedule("tell owners when editor access ends", "accounts.notify_expired_support_grants", 300),
    # Webhook events whose kick was lost (broker outage) or whose processing failed:
    # normally none. Every minute, because it is the only way such events get processed.
    Schedule("process pending ESP webhook events", "invoicing.sweep_webhook_events", 60),
    # Does nothing until BOUNCE_MAILBOX_HOST is set.
    Schedule("read the bounce mailbox", "invoicing.poll_bounce_mailbox", 300),
    # Invoice emails whose sender died between claiming and recording: "outcome unknown".
    Schedule("expire stuck invoice sends", "invoicing.expire_stuck_sending", 300),
    # Queued invoice emails whose send task was lost (normally none): a new task.
    Schedule("requeue stale invoice sends", "invoicing.requeue_stale_deliveries", 600),
    # Mailbox sync: enqueue due mailboxes; free leases of killed workers; re-link mail
    # after contacts' addresses changed (portal cannot call mailsync, so mailsync looks).
    Schedule("sync due mailboxes", "mailsync.dispatch_due", 60),
    Schedule("release stuck mailbox syncs", "mailsync.release_stuck_leases", 600),
    Schedule("re-link mail to changed contact addresses", "mailsync.relink_changed_addresses", 300),
    # Hourly, but each firm only once its last answers' TTL has run out.
    Schedule("re-check firms' sending domains", "troubleshooting.check_all_domains", 3600),
    Schedule(
        "check client address domains take mail", "troubleshooting.check_address_domains", 86400
    ),
]


@transaction.atomic
def schedules_apply(schedules: list[Schedule] = SCHEDULES) -> list[str]:
    names = []
    for schedule in schedules:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_seconds, period=IntervalSchedule.SECONDS
        )
        name = PREFIX + schedule.name
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={"task": schedule.task, "interval": interval, "enabled": True},
        )
        names.append(name)
    PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=names).update(
        enabled=False
    )
    return names
