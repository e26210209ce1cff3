"""The platform's health, for the public status page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from invoicing.models import Delivery, WebhookEvent
from portal.apps import STARTED_AT
from portal.models import Heartbeat
from troubleshooting.models import Incident

STALE_AFTER = timedelta(minutes=5)
# After a start the worker and beat report within a minute (the heartbeat task runs every
# minute, at once when beat starts): until then, a missing worker is "starting", not down.
STARTING_FOR = timedelta(seconds=90)


@dataclass
class Status:
    workers_alive: bool
    worker_last_seen: datetime | None
    beat_last_run: datetime | None
    backlog: int
    sent_last_hour: int
    failed_last_hour: int
    incidents: list[str]
    starting: bool = False

    @property
    def sending_works(self) -> bool:
        return self.failed_last_hour == 0 or self.sent_last_hour > self.failed_last_hour

    @property
    def ok(self) -> bool:
        return self.workers_alive and self.sending_works and not self.incidents

    def as_dict(self) -> dict:
        def iso(value):
            return value.isoformat() if value else None

        return {
            "ok": self.ok,
            "workers_alive": self.workers_alive,
            "worker_last_seen": iso(self.worker_last_seen),
            "beat_last_run": iso(self.beat_last_run),
            "backlog": self.backlog,
            "sending_works": self.sending_works,
            "sent_last_hour": self.sent_last_hour,
            "failed_last_hour": self.failed_last_hour,
            "incidents": self.incidents,
            "starting": self.starting,
        }


def platform_status(*, now: datetime | None = None, started: datetime | None = None) -> Status:
    """``started``: when this web process started (default: when it loaded Django)."""
    now = now or timezone.now()
    if started is None:
        started = datetime.fromtimestamp(STARTED_AT, tz=UTC)
    heartbeat = _worker_seen()
    alive = heartbeat is not None and now - heartbeat < STALE_AFTER
    beat = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
    hour_ago = now - timedelta(hours=1)
    recent = Delivery.objects.filter(created__gte=hour_ago, is_test=False)
    backlog = Delivery.objects.filter(status=Delivery.Status.QUEUED).count()
    backlog += WebhookEvent.objects.filter(processed_at=None).count()
    return Status(
        workers_alive=alive,
        worker_last_seen=heartbeat,
        beat_last_run=beat,
        backlog=backlog,
        sent_last_hour=recent.exclude(status__in=["queued", "failed"]).count(),
        failed_last_hour=recent.filter(status="failed").count(),
        incidents=list(Incident.objects.filter(active=True).values_list("message", flat=True)),
        starting=not alive and now - started < STARTING_FOR,
    )


def _worker_seen() -> datetime | None:
    return Heartbeat.objects.filter(name="worker").values_list("last_seen", flat=True).first()
