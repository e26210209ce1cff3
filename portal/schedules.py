"""Every periodic task the portal runs, declared in code.

`manage.py setup_schedules` writes these into django-celery-beat's tables; entries under our
prefix that are no longer declared here are disabled, so the database never drifts from code.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection as db
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
    # Emails written on a client's Email tab whose task was lost, or whose worker stopped.
    Schedule("watch emails written to clients", "mailsync.written_emails_watch", 60),
    Schedule("re-link mail to changed contact addresses", "mailsync.relink_changed_addresses", 300),
    # Blobs (raw mail) no row names and older than BLOB_SWEEP_GRACE_HOURS: orphans of a
    # crash between blob write and commit, or of deleted messages.
    Schedule("delete unreferenced blobs", "portal.sweep_blobs", 6 * 3600),
    # At most one reminder a day per mailbox; the first email goes at the failure itself.
    Schedule("remind members to re-authenticate mailboxes", "mailsync.remind_reauth", 3600),
    # Hourly, but each firm only once its last answers' TTL has run out.
    Schedule("re-check firms' sending domains", "troubleshooting.check_all_domains", 3600),
    Schedule(
        "check client address domains take mail", "troubleshooting.check_address_domains", 86400
    ),
    # Hourly; each firm's members get it once a week, Monday from 08:00 in the firm's zone.
    Schedule("weekly problems email", "troubleshooting.send_weekly_digests", 3600),
]


# Key of the PostgreSQL advisory lock that makes concurrent runs of setup_schedules (two
# deploys at once) take turns. Any fixed number, unique among the portal's advisory locks.
SCHEDULES_LOCK = 0x5C4ED01E


def _interval(every_seconds: int) -> IntervalSchedule:
    """The interval of ``every_seconds`` seconds: the oldest if several identical ones exist
    (django-celery-beat does not make them unique, and the admin may have added one)."""
    rows = IntervalSchedule.objects.filter(every=every_seconds, period=IntervalSchedule.SECONDS)
    interval = rows.order_by("pk").first()
    if interval is None:
        interval = IntervalSchedule.objects.create(
            every=every_seconds, period=IntervalSchedule.SECONDS
        )
    return interval


@transaction.atomic
def schedules_apply(schedules: list[Schedule] = SCHEDULES) -> list[str]:
    """Write ``schedules`` into django-celery-beat's tables; idempotent, and safe to run
    twice at once: on PostgreSQL runs take turns on an advisory lock (held until this
    transaction ends), so the second one finds the first one's rows and changes nothing.
    """
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEDULES_LOCK])
    names = []
    for schedule in schedules:
        name = PREFIX + schedule.name
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": schedule.task,
                "interval": _interval(schedule.every_seconds),
                # Exactly one kind of schedule per task: one set by hand in the admin goes.
                "crontab": None,
                "solar": None,
                "clocked": None,
                "enabled": True,
            },
        )
        names.append(name)
    PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=names).update(
        enabled=False
    )
    return names
