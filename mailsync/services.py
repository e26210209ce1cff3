"""Changes to mailbox connections. Views, tasks and the sync_mailbox command share these."""

from __future__ import annotations

import datetime
import logging
import random
import secrets

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Case, F, Func, Q, Subquery, Value, When
from django.utils import timezone

from accounts.models import User
from mailsync import crypto
from mailsync.adapters import Credentials, ServerSettings
from mailsync.errors import AUTH_FAILED, INSUFFICIENT_SCOPE, SEND_CODES, TWO_FACTOR, SyncError
from mailsync.linking import clients_by_address, message_client_ids, message_link
from mailsync.models import (
    IgnoredAddress,
    LinkedAddress,
    MailboxConnection,
    MailboxFolder,
    Message,
)
from mailsync.netguard import guard_from_settings
from mailsync.parsing import message_parse
from mailsync.presets import preset_for_host
from mailsync.selectors import unlinked_summary_forget
from portal.addresses import ValidAddress
from portal.blobs import BlobMissing
from portal.models import Client, Contact, ContactAddress, Firm
from portal.services import contact_addresses_add, contact_create

logger = logging.getLogger(__name__)

Health = MailboxConnection.Health
Intent = MailboxConnection.Intent

# Transient failures: retry after 1, 2, 4 ... minutes, never waiting more than an hour, so a
# mailbox whose server comes back is picked up again within the hour (the slow probe).
BACKOFF_BASE = datetime.timedelta(minutes=1)
BACKOFF_CAP = datetime.timedelta(hours=1)
# Wrong host/port/security rarely fix themselves, but a mail admin may fix the server side.
SETTINGS_PROBE = datetime.timedelta(hours=6)


def lease_duration() -> datetime.timedelta:
    """How long a claim or a renewal holds the mailbox (MAILSYNC_LEASE_SECONDS)."""
    return datetime.timedelta(seconds=settings.MAILSYNC_LEASE_SECONDS)


# --- connections -------------------------------------------------------------------------


def connection_settings(connection: MailboxConnection) -> ServerSettings:
    return ServerSettings(
        connection.host,
        connection.port,
        connection.security,  # type: ignore[arg-type]
        connection.username,
        timeout=settings.MAILSYNC_TIMEOUT,
        guard=guard_from_settings(),
    )


def connection_credentials(connection: MailboxConnection) -> Credentials:
    if connection.kind in (MailboxConnection.Kind.GMAIL, MailboxConnection.Kind.MICROSOFT):
        # Refreshes an expiring token (saving a rotated refresh token) and checks the granted
        # scopes; raises SyncError (auth_failed / insufficient_scope) for the engine to record.
        from mailsync.oauth import access_token_for  # oauth builds on this module

        return Credentials(access_token=access_token_for(connection))
    return Credentials(password=crypto.decrypt(connection.secret))


_NO_PROBLEM = {
    "problem_code": "",
    "problem_step": "",
    "problem_detail": "",
    "problem_first_seen": None,
    "problem_last_seen": None,
}


def _send_problem(error: SyncError, *, since: datetime.datetime | None = None) -> dict:
    """Problem fields for a sending-only problem (e.g. send.smtp_auth_disabled).

    The SMTP settings themselves are not stored: MailboxConnection has no fields for them
    and the portal does not send through members' mailboxes yet. Only the problem is kept,
    so the member and the troubleshooting dashboard know what to ask the mail admin.
    """
    if error.code not in SEND_CODES:
        raise ValueError(f"{error.code} is not a sending problem")
    now = timezone.now()
    return {
        "problem_code": error.code,
        "problem_step": error.step,
        "problem_detail": error.detail,
        "problem_first_seen": since or now,
        "problem_last_seen": now,
    }


@transaction.atomic
def connection_create(
    *,
    firm: Firm,
    owner: User | None,
    kind: str,
    email_address: str,
    host: str,
    port: int,
    security: str,
    username: str,
    password: str,
    send_problem: SyncError | None = None,
) -> MailboxConnection:
    """Save a tested mailbox; INBOX is switched on and the first sync is due at once.

    ``send_problem``: the account check read the mailbox fine but SMTP refused sending
    (send.smtp_auth_disabled). The mailbox still syncs, so health stays ok; the problem is
    recorded for the member and the troubleshooting dashboard.
    """
    connection = MailboxConnection.objects.create(
        **(_send_problem(send_problem) if send_problem is not None else {}),
        firm=firm,
        owner=owner,
        kind=kind,
        email_address=email_address,
        host=host,
        port=port,
        security=security,
        username=username,
        secret=crypto.encrypt(password),
        next_attempt_at=timezone.now(),
    )
    MailboxFolder.objects.create(connection=connection, name="INBOX", enabled=True)
    return connection


@transaction.atomic
def connection_reauthenticate(
    *,
    connection: MailboxConnection,
    password: str,
    smtp_checked: bool = False,
    send_problem: SyncError | None = None,
) -> None:
    """New credentials on the same record: folders and cursors stay, so sync resumes
    where it stopped and nothing is imported twice.

    The tested login clears sync problems. A sending problem is replaced by
    ``send_problem``, cleared when SMTP was checked and passed (``smtp_checked``), and
    otherwise kept: an untested SMTP server has not shown that sending works again.
    """
    current = MailboxConnection.objects.select_for_update().get(pk=connection.pk)
    if send_problem is not None:
        same = current.problem_code == send_problem.code
        problem = _send_problem(send_problem, since=current.problem_first_seen if same else None)
    elif current.problem_code in SEND_CODES and not smtp_checked:
        problem = {}  # keep it
    else:
        problem = _NO_PROBLEM
    MailboxConnection.objects.filter(pk=connection.pk).update(
        secret=crypto.encrypt(password),
        intent=Intent.ACTIVE,
        health=Health.OK,
        **problem,
        consecutive_failures=0,
        reauth_notified_at=None,
        next_attempt_at=timezone.now(),
    )
    connection.refresh_from_db()


@transaction.atomic
def connection_server_settings_update(
    *, connection: MailboxConnection, host: str, port: int, security: str, password: str
) -> None:
    """Corrected server settings (and the password typed with them), after the account
    check passed with them: the same record, so folders and cursors stay and sync resumes
    where it stopped. The sync problem is over; a sending problem stays (SMTP is untested)."""
    current = MailboxConnection.objects.select_for_update().get(pk=connection.pk)
    problem = {} if current.problem_code in SEND_CODES else _NO_PROBLEM
    MailboxConnection.objects.filter(pk=connection.pk).update(
        host=host,
        port=port,
        security=security,
        secret=crypto.encrypt(password),
        intent=Intent.ACTIVE,
        health=Health.OK,
        **problem,
        consecutive_failures=0,
        next_attempt_at=timezone.now(),
    )
    connection.refresh_from_db()


def connection_send_problem_clear(*, connection: MailboxConnection) -> bool:
    """A successful SMTP login proves sending is allowed again: drop a recorded sending
    problem (sync problems stay). Returns whether one was cleared."""
    cleared = (
        MailboxConnection.objects.filter(pk=connection.pk, problem_code__in=SEND_CODES).update(
            **_NO_PROBLEM
        )
        > 0
    )
    connection.refresh_from_db()
    return cleared


def connection_stop(*, connection: MailboxConnection) -> None:
    """Stop Email Sync: keep every synced message, wipe the credentials."""
    MailboxConnection.objects.filter(pk=connection.pk).update(
        intent=Intent.STOPPED, secret="", next_attempt_at=None
    )
    connection.refresh_from_db()


def connection_remove(*, connection: MailboxConnection) -> None:
    """Remove the account from the settings; its synced mail stays on the clients."""
    MailboxConnection.objects.filter(pk=connection.pk).update(
        intent=Intent.REMOVED, secret="", next_attempt_at=None
    )
    connection.refresh_from_db()


def connection_sync_soon(*, connection: MailboxConnection) -> None:
    """Sync now: make the mailbox due (a backing-off mailbox is retried at once)."""
    MailboxConnection.objects.filter(pk=connection.pk, intent=Intent.ACTIVE).exclude(
        health__in=[Health.NEEDS_REAUTH, Health.NEEDS_PERMISSIONS]
    ).update(next_attempt_at=timezone.now())


def folder_recheck_request(*, folder: MailboxFolder) -> None:
    """ "Re-check this folder" (sync.gap): the next sync of the mailbox re-reads what the
    server holds and the portal lacks, and counts again; the mailbox is due at once."""
    MailboxFolder.objects.filter(pk=folder.pk).update(recheck_requested_at=timezone.now())
    connection_sync_soon(connection=folder.connection)


@transaction.atomic
def folders_select(*, connection: MailboxConnection, enabled_names: set[str]) -> None:
    """Switch folders on or off; a folder switched on for the first time backfills."""
    for folder in MailboxFolder.objects.select_for_update().filter(connection=connection):
        enabled = folder.name in enabled_names
        if enabled == folder.enabled:
            continue
        folder.enabled = enabled
        if enabled and folder.state == MailboxFolder.State.INITIAL and folder.last_uid:
            folder.state = MailboxFolder.State.BACKFILLING
        folder.save(update_fields=["enabled", "state"])


def credentials_rotate() -> int:
    """Re-encrypt every stored secret with the newest key (run after adding a key)."""
    count = 0
    for pk, secret in MailboxConnection.objects.exclude(secret="").values_list("pk", "secret"):
        MailboxConnection.objects.filter(pk=pk, secret=secret).update(secret=crypto.rotate(secret))
        count += 1
    return count


# --- health ------------------------------------------------------------------------------


def connection_record_success(*, connection: MailboxConnection, imported: int) -> None:
    now = timezone.now()
    # A sync that worked says nothing about sending: a sending problem stays until a
    # successful SMTP check clears it; any other problem is over.
    sending = Q(problem_code__in=SEND_CODES)
    MailboxConnection.objects.filter(pk=connection.pk).update(
        health=Health.OK,
        **{
            name: Case(
                When(sending, then=F(name)),
                default=Value(empty),
                output_field=MailboxConnection._meta.get_field(name),
            )
            for name, empty in _NO_PROBLEM.items()
        },
        consecutive_failures=0,
        reauth_notified_at=None,
        last_success_at=now,
        next_attempt_at=now + datetime.timedelta(seconds=settings.MAILSYNC_POLL_SECONDS),
    )
    connection.refresh_from_db()


# A sync the blob store failed (portal.blobs.BlobStoreUnavailable) is tried again after about
# this long: the platform's trouble, so the mailbox's own health and backoff stay as they are.
STORE_RETRY = datetime.timedelta(minutes=5)


def connection_retry_later(*, connection: MailboxConnection) -> None:
    """The sync could not store what it fetched: try again in a few minutes (not every
    minute, which would fetch the same mail from the member's server again and again),
    recording nothing against the mailbox."""
    retry = timezone.now() + STORE_RETRY * random.uniform(0.8, 1.2)
    MailboxConnection.objects.filter(pk=connection.pk).update(next_attempt_at=retry)
    connection.refresh_from_db()


def _backoff(failures: int) -> datetime.timedelta:
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(failures - 1, 0))
    # ±20% jitter so mailboxes on one server that failed together do not retry together.
    return delay * random.uniform(0.8, 1.2)


def connection_record_failure(*, connection: MailboxConnection, error: SyncError) -> None:
    """Move the connection to the health the error calls for.

    Authentication and permission problems stop retries until a person acts (retrying a
    wrong password can lock the mailbox); transient ones back off.
    """
    now = timezone.now()
    connection.refresh_from_db()
    failures = connection.consecutive_failures + 1
    if error.code in (AUTH_FAILED, TWO_FACTOR):
        health, next_attempt = Health.NEEDS_REAUTH, None
    elif error.code == INSUFFICIENT_SCOPE:
        health, next_attempt = Health.NEEDS_PERMISSIONS, None
    elif error.transient:
        health, next_attempt = Health.DEGRADED, now + _backoff(failures)
    else:
        health, next_attempt = Health.NEEDS_SETTINGS, now + SETTINGS_PROBE
    same_problem = connection.problem_code == error.code
    MailboxConnection.objects.filter(pk=connection.pk).update(
        health=health,
        problem_code=error.code,
        problem_step=error.step,
        problem_detail=error.detail,
        problem_first_seen=connection.problem_first_seen if same_problem else now,
        problem_last_seen=now,
        consecutive_failures=failures,
        next_attempt_at=next_attempt,
    )
    logger.info(
        "mailbox %s: %s at %s (failure %s)", connection.pk, error.code, error.step, failures
    )
    connection.refresh_from_db()
    if health == Health.NEEDS_REAUTH:
        try:
            connection_reauth_notify(pk=connection.pk)
        except Exception:
            # The outbox refused: the failure is recorded all the same, and the hourly
            # reminder (remind_reauth) sends the email once the outbox takes it.
            logger.exception("mailbox %s: re-authentication email not sent", connection.pk)


# The member hears at once that their mailbox needs re-authentication, then at most once
# per this interval while it lasts (reminders come from the hourly `remind_reauth` task).
REAUTH_REMINDER_INTERVAL = datetime.timedelta(days=1)


def _reauth_due(now: datetime.datetime) -> Q:
    return (
        Q(intent=Intent.ACTIVE, health=Health.NEEDS_REAUTH)
        & ~Q(secret="")
        & (
            Q(reauth_notified_at__isnull=True)
            | Q(reauth_notified_at__lte=now - REAUTH_REMINDER_INTERVAL)
        )
    )


def connection_reauth_notify(*, pk: int) -> bool:
    """Email the mailbox's member (the firm's owners for a shared mailbox) that it needs
    re-authentication, unless they were told within REAUTH_REMINDER_INTERVAL or it is fixed.

    The claim is one conditional UPDATE: of workers racing on the same failure, PostgreSQL
    lets one through and re-checks the condition for the others after its commit, so one
    email goes out. Returns whether this call sent it.
    """
    from mailsync.emails import send_reauth_needed_email  # emails render templates

    now = timezone.now()
    claimed = MailboxConnection.objects.filter(_reauth_due(now), pk=pk).update(
        reauth_notified_at=now
    )
    if not claimed:
        return False
    connection = MailboxConnection.objects.select_related("owner", "firm").get(pk=pk)
    try:
        send_reauth_needed_email(connection=connection)
    except Exception:
        # Not sent: let the next reminder run try again instead of waiting a day.
        MailboxConnection.objects.filter(pk=pk, reauth_notified_at=now).update(
            reauth_notified_at=None
        )
        raise
    return True


def connections_reauth_reminders_due() -> list[int]:
    return list(
        MailboxConnection.objects.filter(_reauth_due(timezone.now())).values_list("pk", flat=True)
    )


# --- one sync at a time ------------------------------------------------------------------


def _due() -> Q:
    now = timezone.now()
    return (
        Q(intent=Intent.ACTIVE)
        & ~Q(secret="")
        & ~Q(health__in=[Health.NEEDS_REAUTH, Health.NEEDS_PERMISSIONS])
        & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        & _lease_free(now)
    )


def connections_due(*, limit: int = 500) -> list[int]:
    return list(
        MailboxConnection.objects.filter(_due())
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def host_connection_cap(host: str) -> int:
    """How many mailboxes on ``host`` may sync at once across all workers (0: no limit).

    The providers in mailsync.presets limit connections per account, not per server (Gmail
    about 15 per account): one sync per mailbox already keeps each account to a single
    connection, and a cap on their shared host names would make every firm's Gmail or
    Microsoft 365 mailboxes wait for each other.
    """
    if preset_for_host(host) is not None:
        return 0
    return max(settings.MAILSYNC_MAX_CONNECTIONS_PER_HOST, 0)


def _lease_free(now: datetime.datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def _leases_on(host: str, now: datetime.datetime) -> Subquery:
    """How many unexpired leases ``host`` has: a lease whose worker died stops holding a
    slot the moment it expires, before the watchdog clears it."""
    return Subquery(
        MailboxConnection.objects.filter(host__iexact=host, lease_until__gte=now)
        .order_by()
        .annotate(n=Func("pk", function="COUNT"))
        .values("n")
    )


def connection_claim(*, pk: int, force: bool = False) -> MailboxConnection | None:
    """Take the mailbox's lease, or None if another worker holds it, it is not due, or its
    server already has its limit of syncs running (see `host_connection_cap`).

    A mailbox turned away for a slot keeps its next attempt and failure count: it stays due
    and the next dispatch offers it again. The lease is written by one conditional UPDATE
    that also counts the server's leases, so on SQLite (no row locks, one writer at a time)
    the count and the claim are one step. On PostgreSQL every claim for the same server first
    locks that server's rows, in primary-key order (so two claims cannot deadlock); claims
    for one server then run one after another and the count never misses a lease committed
    by another worker, on this machine or another. Different servers never wait for each
    other.
    """
    # Read before the transaction: on SQLite the UPDATE below must be the transaction's
    # first statement, so that it takes the write lock before reading anything.
    host = MailboxConnection.objects.filter(pk=pk).values_list("host", flat=True).first()
    if host is None:
        return None
    cap = host_connection_cap(host)
    token = secrets.token_hex(16)
    with transaction.atomic():
        if cap and db_connection.features.has_select_for_update:
            list(
                MailboxConnection.objects.select_for_update()
                .filter(host__iexact=host)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
        now = timezone.now()
        rows = MailboxConnection.objects.filter(pk=pk).filter(_lease_free(now))
        if not force:
            rows = rows.filter(_due())
        if cap:
            rows = rows.alias(leases_on_host=_leases_on(host, now)).filter(leases_on_host__lt=cap)
        claimed = rows.update(
            lease_token=token, lease_until=now + lease_duration(), last_attempt_at=now
        )
        if not claimed:
            return None
        return MailboxConnection.objects.get(pk=pk)


# Why a sync run must stop (see connection_lease_renew).
LEASE_LOST = "lease_lost"
STOPPED = "stopped"


def connection_lease_renew(*, pk: int, token: str) -> str:
    """Inside the caller's transaction: lock the connection's row, check that the run holding
    ``token`` may still write, and renew its lease. Returns "" if it may, else why not:
    ``LEASE_LOST`` (another worker claimed the mailbox, the watchdog freed it, or the lease
    ran out) or ``STOPPED`` (the member stopped or removed it, or it is gone).

    The row lock is held until the caller commits, so a claim by another worker (an UPDATE
    of the same row) waits for the commit and then finds the renewed lease: a batch commits
    only while its run owns the mailbox, and the check and the write are one step.

    An empty ``token`` is a run without a lease (tests, a shell): it may write as long as no
    worker has claimed the mailbox meanwhile.
    """
    row = (
        MailboxConnection.objects.select_for_update()
        .filter(pk=pk)
        .values_list("lease_token", "lease_until", "intent")
        .first()
    )
    if row is None:
        return STOPPED
    lease_token, lease_until, intent = row
    now = timezone.now()
    # An expired lease is lost even if nobody took it yet: its server slot may already count
    # for another mailbox (see _leases_on), so this run must not go on.
    if lease_token != token or (token and (lease_until is None or lease_until < now)):
        return LEASE_LOST
    if intent != Intent.ACTIVE:
        return STOPPED
    if token:
        MailboxConnection.objects.filter(pk=pk).update(lease_until=now + lease_duration())
    return ""


def connection_release(*, connection: MailboxConnection, token: str | None = None) -> None:
    """Give the lease back, if it is still ``token`` (default: the connection's, as claimed).

    Pass the token taken at the claim when ``connection`` was refreshed since (as
    ``mailbox_sync`` does): after losing the lease it would hold the new owner's token.
    """
    token = connection.lease_token if token is None else token
    if not token:
        return
    MailboxConnection.objects.filter(pk=connection.pk, lease_token=token).update(
        lease_token="", lease_until=None
    )


def leases_release_expired() -> int:
    """Watchdog: free leases whose worker died (the sync resumes from its cursor)."""
    return MailboxConnection.objects.filter(lease_until__lt=timezone.now()).update(
        lease_token="", lease_until=None
    )


# --- relinking ---------------------------------------------------------------------------


def _attachments_of(message: Message) -> list:
    """The message's attachments, parsed again from its raw mail in the blob store; none
    (and a warning) if the store lost it, so one missing blob does not stop a relink."""
    try:
        return message_parse(message.raw).attachments
    except BlobMissing:
        logger.warning(
            "message %s: raw mail %s missing from the blob store", message.pk, message.raw_sha256
        )
        return []


def messages_relink(*, firm: Firm, normalized_addresses: set[str]) -> int:
    """Re-link every message of ``firm`` that mentions one of these addresses; returns the
    number of links added. Used when contacts' addresses were added, changed or removed."""
    addresses = {address.lower() for address in normalized_addresses if address}
    if not addresses:
        return 0
    query = Q()
    for address in addresses:
        query |= Q(participants__contains=f" {address} ")
    messages = Message.objects.filter(firm=firm).filter(query).defer("text_body")
    added = 0
    for message in messages.iterator(chunk_size=200):
        participants = message.participants.split()
        index = clients_by_address(firm_id=firm.pk, addresses=participants)
        client_ids = message_client_ids(participants=participants, index=index)
        with transaction.atomic():
            attachments = _attachments_of(message) if client_ids else []
            added += message_link(
                message=message, client_ids=client_ids, attachments=attachments
            ).links
    unlinked_summary_forget(firm=firm)
    return added


def addresses_relink_changed() -> int:
    """Find contact addresses added, changed or removed since the last run (by comparing
    with `LinkedAddress`) and re-link the messages that mention them."""
    current = set(ContactAddress.objects.values_list("firm_id", "normalized", "contact__client_id"))
    known = set(LinkedAddress.objects.values_list("firm_id", "normalized", "client_id"))
    changed: dict[int, set[str]] = {}
    for firm_id, normalized, _client in current ^ known:
        changed.setdefault(firm_id, set()).add(normalized)
    added = 0
    for firm in Firm.objects.filter(pk__in=changed):
        added += messages_relink(firm=firm, normalized_addresses=changed[firm.pk])
    with transaction.atomic():
        for firm_id, normalized, client_id in known - current:
            LinkedAddress.objects.filter(
                firm_id=firm_id, normalized=normalized, client_id=client_id
            ).delete()
        LinkedAddress.objects.bulk_create(
            [LinkedAddress(firm_id=f, normalized=n, client_id=c) for f, n, c in current - known],
            ignore_conflicts=True,
        )
    return added


# --- unlinked mail: "link this address to a client" --------------------------------------


@transaction.atomic
def unlinked_address_link(
    *,
    firm: Firm,
    address: ValidAddress,
    client: Client,
    contact: Contact | None,
    new_contact_name: str = "",
) -> int:
    """Add ``address`` to ``contact`` of ``client`` (or to a new contact named
    ``new_contact_name``) and link the firm's messages that name it at once, attachments
    included. Returns the number of message links added.

    Linking undoes an earlier "ignore", and records the address as linked so that the
    periodic relink (`addresses_relink_changed`) does not do the same work again.
    """
    if client.firm_id != firm.pk or (contact is not None and contact.client_id != client.pk):
        raise ValueError("the client and contact must belong to the firm")
    if contact is None:
        contact_create(client=client, name=new_contact_name, addresses=[address])
    else:
        contact_addresses_add(contact=contact, addresses=[address])
    links = messages_relink(firm=firm, normalized_addresses={address.normalized})
    LinkedAddress.objects.get_or_create(firm=firm, normalized=address.normalized, client=client)
    IgnoredAddress.objects.filter(firm=firm, normalized=address.normalized).delete()
    unlinked_summary_forget(firm=firm)
    return links


def address_ignore(*, firm: Firm, normalized: str, user: User | None) -> IgnoredAddress:
    """Leave ``normalized`` unlinked on purpose (a newsletter, a supplier, a colleague): it
    leaves the unlinked-mail list and the `sync.not_linked` count. Its mail stays."""
    ignored, _created = IgnoredAddress.objects.get_or_create(
        firm=firm, normalized=normalized, defaults={"ignored_by": user}
    )
    unlinked_summary_forget(firm=firm)
    return ignored


def address_unignore(*, ignored: IgnoredAddress) -> None:
    """Stop ignoring: the address's unlinked mail is listed and counted again."""
    ignored.delete()
    unlinked_summary_forget(firm=ignored.firm)
