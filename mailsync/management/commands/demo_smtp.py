"""Run the demo's sending server on loopback (scripts/run.sh starts it): see mailsync.demo_smtp."""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsync.demo_smtp import demo_smtp_server


class Command(BaseCommand):
    help = (
        "Run the demo's SMTP server on loopback: mail the demo mailboxes send goes to the Outbox."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.DEMO_SMTP_PORT)

    def handle(self, *args, port: int, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_smtp is for the demo: it takes any mailbox's login. DEBUG=1.")
        server = demo_smtp_server(port)
        server.start()
        self.stdout.write(f"Demo sending server on 127.0.0.1:{port} (mail goes to the Outbox)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
