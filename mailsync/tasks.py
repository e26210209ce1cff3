"""Celery tasks: thin wrappers that take primary keys and call the services.

Beat runs `dispatch_due` every minute. It only enqueues; each mailbox then syncs in its own
task, so one slow or broken mailbox never delays the others. A lease on the connection row
keeps it to one sync per mailbox, across workers on any number of machines, and the claim
counts the leases on the mailbox's server so that no more than its limit of mailboxes there
sync at once (MAILSYNC_MAX_CONNECTIONS_PER_HOST; see services.connection_claim).
"""

from __future__ import annotations

from celery import shared_task

from mailsync import services, written
from mailsync.engine import mailbox_sync


@shared_task(name="mailsync.sync_mailbox", ignore_result=True, acks_late=True)
def sync_mailbox(connection_id: int, force: bool = False) -> None:
    connection = services.connection_claim(pk=connection_id, force=force)
    if connection is None:
        # Another worker has it, it is no longer due, or its server has no free slot: it
        # stays due, and the next dispatch offers it again.
        return
    token = connection.lease_token  # the sync refreshes `connection`; release only ours
    try:
        mailbox_sync(connection)
    finally:
        services.connection_release(connection=connection, token=token)


@shared_task(name="mailsync.dispatch_due", ignore_result=True)
def dispatch_due() -> None:
    """Every minute: enqueue each mailbox whose next attempt is due.

    Safe to run twice: a duplicate task finds the lease taken and does nothing.
    """
    for pk in services.connections_due():
        sync_mailbox.delay(pk)


@shared_task(name="mailsync.release_stuck_leases", ignore_result=True)
def release_stuck_leases() -> None:
    """Watchdog: a worker killed mid-sync leaves its lease; free it once it has expired."""
    services.leases_release_expired()


@shared_task(name="mailsync.relink_changed_addresses", ignore_result=True)
def relink_changed_addresses() -> None:
    """Re-link messages whose contact addresses were added, changed or removed."""
    services.addresses_relink_changed()


@shared_task(name="mailsync.remind_reauth", ignore_result=True)
def remind_reauth() -> None:
    """Hourly: remind members whose mailbox still needs re-authentication (at most daily)."""
    for pk in services.connections_reauth_reminders_due():
        services.connection_reauth_notify(pk=pk)


@shared_task(name="mailsync.send_written_email", ignore_result=True, acks_late=True)
def send_written_email(written_id: int) -> None:
    """Send an email a member wrote on a client's Email tab (once: see mailsync.written)."""
    written.written_email_send(written_id)


@shared_task(name="mailsync.written_emails_watch", ignore_result=True)
def written_emails_watch() -> None:
    """Every minute: queue again written emails whose task was lost; those whose worker
    stopped mid-send become "unknown"."""
    written.written_emails_watch()
