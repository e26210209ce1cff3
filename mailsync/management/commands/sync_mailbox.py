"""Run one mailbox's sync in the foreground, with the code the Celery tasks use.

    python manage.py sync_mailbox me@firm.example [--folder Archive]
    python manage.py sync_mailbox 42
    python manage.py sync_mailbox --all

Shows progress per batch and ends with the counts and the connection's state, so an
operator can see why a mailbox misbehaves.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from mailsync import services
from mailsync.engine import mailbox_sync
from mailsync.models import MailboxConnection


class Command(BaseCommand):
    help = "Sync one mailbox (by address or id) now, or every due mailbox with --all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("mailbox", nargs="?", help="the mailbox's email address or id")
        parser.add_argument("--folder", help="sync only this folder")
        parser.add_argument("--all", action="store_true", help="sync every due mailbox")

    def handle(self, *args: object, **options: object) -> None:
        mailbox = options["mailbox"]
        if options["all"]:
            pks = services.connections_due()
            force = False
        elif mailbox:
            query = Q(email_address__iexact=mailbox) | Q(username__iexact=mailbox)
            if str(mailbox).isdigit():
                query |= Q(pk=int(str(mailbox)))
            matches = MailboxConnection.objects.filter(query).exclude(
                intent=MailboxConnection.Intent.REMOVED
            )
            pks = list(matches.values_list("pk", flat=True))
            if not pks:
                raise CommandError(f"No mailbox matches {mailbox!r}.")
            if len(pks) > 1:
                raise CommandError(f"{mailbox!r} matches several mailboxes; give an id: {pks}")
            force = True
        else:
            raise CommandError("Give a mailbox address or id, or --all.")
        for pk in pks:
            self._sync(pk, folder=options["folder"], force=force)  # type: ignore[arg-type]

    def _sync(self, pk: int, *, folder: str | None, force: bool) -> None:
        connection = services.connection_claim(pk=pk, force=force)
        if connection is None:
            self.stdout.write(
                f"mailbox {pk}: skipped: another sync holds it, it is not due, or its server "
                f"already has MAILSYNC_MAX_CONNECTIONS_PER_HOST="
                f"{settings.MAILSYNC_MAX_CONNECTIONS_PER_HOST} syncs running"
            )
            return
        self.stdout.write(f"mailbox {pk} ({connection.email_address}): syncing")

        def progress(folder_name: str, done: int, total: int) -> None:
            self.stdout.write(f"  {folder_name}: {done}/{total}")

        token = connection.lease_token  # the sync refreshes `connection`; release only ours
        try:
            report = mailbox_sync(connection, folder=folder, on_batch=progress)
        finally:
            services.connection_release(connection=connection, token=token)
        counts = " ".join(f"{key}={value}" for key, value in report.as_dict().items())
        self.stdout.write(counts)
        for problem in report.problems:
            self.stdout.write(f"  problem: {problem}")
        connection.refresh_from_db()
        self.stdout.write(
            f"intent={connection.intent} health={connection.health}"
            + (f" problem={connection.problem_code}" if connection.problem_code else "")
            + (
                f" next_attempt={connection.next_attempt_at:%Y-%m-%d %H:%M:%S}"
                if connection.next_attempt_at
                else ""
            )
        )
