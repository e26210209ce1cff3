"""The platform's health, for the public status page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from invoicing.delivery.models import Delivery, WebhookEvent
from mailsync.errors import SEND_CODES
from mailsync.models import MailboxConnection
from portal.apps import STARTED_AT
from portal.blobs import store_failed_at
from portal.models import Heartbeat
from troubleshooting.models import Incident
from troubleshooting.selectors import connection_blip

STALE_AFTER = timedelta(minutes=5)
ACCEPTED = (
    "sent",
    "deferred",
    "delivered",
    "opened",
    "clicked",
    "soft_bounced",
    "bounced",
    "complained",
)
# A mailbox with no problem syncs every few minutes (MAILSYNC_POLL_SECONDS); one that has not
# for this long means the platform's sync is stuck, not the mailbox.
SYNC_LAG_LIMIT = timedelta(hours=1)
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
    mailboxes_syncing: int = 0
    mailboxes_failing: int = 0
    # How long ago the longest-waiting problem-free mailbox last synced (None: no mailbox).
    oldest_sync_lag: timedelta | None = None
    starting: bool = False
    # When storing mail last failed (the blob store: a full disk, a bucket out of reach).
    store_failed_at: datetime | None = None

    @property
    def sending_works(self) -> bool:
        return self.failed_last_hour == 0 or self.sent_last_hour > self.failed_last_hour

    @property
    def oldest_sync_lag_minutes(self) -> int | None:
        return (
            None
            if self.oldest_sync_lag is None
            else int(self.oldest_sync_lag.total_seconds() // 60)
        )

    @property
    def sync_works(self) -> bool:
        return self.oldest_sync_lag is None or self.oldest_sync_lag < SYNC_LAG_LIMIT

    @property
    def storing_works(self) -> bool:
        return self.store_failed_at is None

    @property
    def ok(self) -> bool:
        return (
            self.workers_alive
            and self.sending_works
            and self.sync_works
            and self.storing_works
            and not self.incidents
        )

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
            "sync_works": self.sync_works,
            "mailboxes_syncing": self.mailboxes_syncing,
            "mailboxes_failing": self.mailboxes_failing,
            "oldest_sync_lag_seconds": (
                int(self.oldest_sync_lag.total_seconds()) if self.oldest_sync_lag else None
            ),
            "starting": self.starting,
            "storing_works": self.storing_works,
            "store_failed_at": iso(self.store_failed_at),
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
    # A mailbox's own trouble (wrong password, a server down) is its problem, shown to its
    # firm; a short-lived connection failure is not counted (see troubleshooting.selectors).
    failing = Q(problem_code__gt="") & ~connection_blip(now) & ~Q(problem_code__in=SEND_CODES)
    sync = MailboxConnection.objects.filter(intent=MailboxConnection.Intent.ACTIVE).aggregate(
        syncing=Count("pk"),
        failing=Count("pk", filter=failing),
        oldest=Min(
            Coalesce("last_success_at", "created"),
            filter=Q(problem_code="") | Q(problem_code__in=SEND_CODES),
        ),
    )
    return Status(
        workers_alive=alive,
        worker_last_seen=heartbeat,
        beat_last_run=beat,
        backlog=backlog,
        # Handed over and taken by the mail system; refused, blocked or cancelled emails and
        # those still waiting or of unknown outcome were not sent.
        sent_last_hour=recent.filter(status__in=ACCEPTED).count(),
        failed_last_hour=recent.filter(status="failed").count(),
        incidents=list(Incident.objects.filter(active=True).values_list("message", flat=True)),
        mailboxes_syncing=sync["syncing"],
        mailboxes_failing=sync["failing"],
        oldest_sync_lag=max(now - sync["oldest"], timedelta(0)) if sync["oldest"] else None,
        starting=not alive and now - started < STARTING_FOR,
        store_failed_at=store_failed_at(),
    )


def _worker_seen() -> datetime | None:
    return Heartbeat.objects.filter(name="worker").values_list("last_seen", flat=True).first()
