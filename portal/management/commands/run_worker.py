"""Start a Celery worker for one queue (or several) with the concurrency settings give it."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Run a Celery worker consuming QUEUE (sync, send, webhooks, checks, default; comma "
        "separated for several) with CELERY_QUEUE_CONCURRENCY processes. Extra arguments "
        "after -- go to celery."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queue", help="queue name(s), comma separated")
        parser.add_argument("--concurrency", "-c", type=int, default=None)
        parser.add_argument("celery_args", nargs="*", help="extra celery worker arguments")

    def handle(self, *args, queue: str, concurrency: int | None, celery_args: list[str], **opts):
        queues = [name.strip() for name in queue.split(",") if name.strip()]
        unknown = sorted(set(queues) - set(settings.CELERY_QUEUES))
        if not queues or unknown:
            raise CommandError(
                f"Unknown queue(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(settings.CELERY_QUEUES)}"
            )
        if concurrency is None:
            concurrency = sum(settings.CELERY_QUEUE_CONCURRENCY[name] for name in queues)
        from portal.celery import app

        app.worker_main(
            [
                "worker",
                "-Q",
                ",".join(queues),
                "-c",
                str(concurrency),
                "-n",
                f"{'+'.join(queues)}@%h",
                "--loglevel",
                "INFO",
                *celery_args,
            ]
        )
