"""The sync engine: one mailbox, incrementally, in batches that commit with their cursor.

Each batch is fetched, parsed, stored, linked and committed together with the folder's
cursor (IMAP: UIDVALIDITY + last UID; POP3: the UIDL source rows) in ONE transaction. A
worker killed at any moment therefore loses nothing (the uncommitted batch is fetched again)
and duplicates nothing (what was committed is behind the cursor).
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from mailsync import services
from mailsync.adapters import FetchedMessage, ImapMailbox, Pop3Mailbox
from mailsync.crypto import CredentialsUnavailable
from mailsync.errors import FolderNotFound, SyncError, UidValidityChanged
from mailsync.linking import (
    clients_by_address,
    message_client_ids,
    message_link,
    messages_link_new,
)
from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageSource
from mailsync.parsing import ParsedMessage, message_parse

logger = logging.getLogger(__name__)

# A folder whose UIDVALIDITY keeps changing is re-read at most this many times; after that
# a person should look (something on the server is rebuilding its index in a loop).
MAX_RESETS = 5
POP3_FOLDER = "INBOX"
# Discovery asks at most this many switched-off folders for their message count per run
# (one STATUS each), and gives up after this many STATUS failures that are not "no such
# folder" (the session is probably broken).
MAX_STATUS_PER_SYNC = 50
MAX_STATUS_FAILURES = 3


@dataclass
class SyncReport:
    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    linked: int = 0
    documents: int = 0
    kept_raw: int = 0
    errors: int = 0
    state: str = ""
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int | str]:
        return {
            "fetched": self.fetched,
            "new": self.new,
            "duplicates": self.duplicates,
            "linked": self.linked,
            "documents": self.documents,
            "kept_raw": self.kept_raw,
            "errors": self.errors,
            "state": self.state,
        }


# Called after each committed batch with (folder name, messages done, messages total). The
# command prints progress with it; tests raise from it to play a worker killed mid-run.
BatchHook = Callable[[str, int, int], None]


def _max_message_bytes() -> int:
    # Above this a message is kept with its header only (and flagged), so one huge message
    # cannot exhaust a worker's memory.
    return 2 * settings.MAILSYNC_MAX_ATTACHMENT_BYTES + 1024 * 1024


def _message_fields(parsed: ParsedMessage, raw: bytes) -> dict:
    participants = sorted(parsed.addresses)
    return {
        "message_id": parsed.message_id,
        "subject": parsed.subject,
        "from_name": parsed.from_name,
        "from_address": parsed.from_address,
        "to_addresses": parsed.to,
        "cc_addresses": parsed.cc,
        "reply_to_addresses": parsed.reply_to,
        "participants": f" {' '.join(participants)} " if participants else "",
        "date": parsed.date,
        "in_reply_to": parsed.in_reply_to,
        "references": " ".join(parsed.references),
        "thread_key": parsed.thread_key,
        "snippet": " ".join(parsed.text.split())[:300],
        "text_body": parsed.text[:200_000],
        "raw": raw,
        "size": len(raw),
        "parse_error": bool(parsed.errors),
        "parse_error_detail": "\n".join(parsed.errors)[:5000],
    }


ParsedItem = tuple[ParsedMessage, bytes, int | None, str, bool]


def _parse_batch(
    fetched: list[tuple[FetchedMessage | None, str, bytes, datetime.datetime | None, bool]],
) -> list[ParsedItem]:
    parsed_items: list[ParsedItem] = []
    for item, uidl, raw, internaldate, truncated in fetched:
        parsed = message_parse(raw, internaldate=internaldate)
        if truncated:
            parsed.errors.append("message larger than the size limit: header kept only")
        parsed_items.append((parsed, raw, item.uid if item else None, uidl, truncated))
    return parsed_items


# One multi-row INSERT holds every raw message of its rows in memory (twice over, escaped),
# so a batch is inserted in statements of about this many bytes: peak RSS stays as it was.
MAX_INSERT_BYTES = 1024 * 1024


def _chunks_by_size(messages: list[Message]) -> list[list[Message]]:
    chunks: list[list[Message]] = [[]]
    size = 0
    for message in messages:
        if chunks[-1] and size + message.size > MAX_INSERT_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(message)
        size += message.size
    return chunks


def _store_batch(
    *,
    connection: MailboxConnection,
    folder: MailboxFolder,
    fetched: list[tuple[FetchedMessage | None, str, bytes, datetime.datetime | None, bool]],
    report: SyncReport,
) -> int:
    """Store one batch's messages and sources (inside the caller's transaction).

    Items are (fetched or None, uidl, raw, internaldate, truncated); returns how many
    messages were new to the firm.

    A handful of queries per batch: the batch's keys already known to the firm (one
    SELECT), the new messages (one INSERT returning their ids), the sources (one INSERT,
    conflicts ignored: the unique constraints guard them), the client index (one SELECT),
    the links and attachments of the new messages (see ``messages_link_new``). If another
    worker inserts one of the same messages meanwhile, the batch falls back to storing its
    messages one by one, which handles that race.
    """
    parsed_items = _parse_batch(fetched)
    firm_id = connection.firm_id
    keys = {parsed.key for parsed, *_ in parsed_items}
    known: dict[str, Message] = {
        message.key: message
        for message in Message.objects.filter(firm_id=firm_id, key__in=keys).only("pk", "key")
    }
    to_create: dict[str, Message] = {}
    for parsed, raw, _uid, _uidl, _truncated in parsed_items:
        if parsed.key not in known and parsed.key not in to_create:
            to_create[parsed.key] = Message(
                firm_id=firm_id, key=parsed.key, **_message_fields(parsed, raw)
            )
    if to_create:
        try:
            with transaction.atomic():
                created_messages = []
                for chunk in _chunks_by_size(list(to_create.values())):
                    created_messages += Message.objects.bulk_create(chunk)
        except IntegrityError:
            # A concurrent sync of another mailbox of the firm stored one of them first.
            return _store_batch_one_by_one(
                connection=connection, folder=folder, parsed_items=parsed_items, report=report
            )
        if any(message.pk is None for message in created_messages):
            # A database that cannot return ids from a bulk insert: read them back.
            ids = dict(
                Message.objects.filter(firm_id=firm_id, key__in=to_create).values_list("key", "pk")
            )
            for message in created_messages:
                message.pk = ids[message.key]
    MessageSource.objects.bulk_create(
        [
            MessageSource(
                connection=connection,
                folder=folder,
                message=known.get(parsed.key) or to_create[parsed.key],
                **({"uid": uid} if uid is not None else {"uidl": uidl}),
            )
            for parsed, _raw, uid, uidl, _truncated in parsed_items
        ],
        ignore_conflicts=True,
    )
    new = 0
    to_link: list[tuple[Message, set[int], list]] = []
    first_seen: set[str] = set()
    addresses = {
        address
        for parsed, *_ in parsed_items
        if parsed.key in to_create
        for address in parsed.addresses
    }
    index = clients_by_address(firm_id=firm_id, addresses=addresses) if addresses else {}
    for parsed, _raw, _uid, _uidl, _truncated in parsed_items:
        if parsed.key not in to_create or parsed.key in first_seen:
            report.duplicates += 1
            continue
        first_seen.add(parsed.key)
        new += 1
        report.new += 1
        if parsed.errors:
            report.kept_raw += 1
        client_ids = message_client_ids(participants=sorted(parsed.addresses), index=index)
        if client_ids:
            to_link.append((to_create[parsed.key], client_ids, parsed.attachments))
    if to_link:
        result = messages_link_new(firm_id=firm_id, items=to_link)
        report.linked += result.links
        report.documents += result.documents
    return new


def _store_batch_one_by_one(
    *,
    connection: MailboxConnection,
    folder: MailboxFolder,
    parsed_items: list[ParsedItem],
    report: SyncReport,
) -> int:
    """The per-message path (get_or_create each): safe against concurrent inserts."""
    addresses = {address for parsed, *_ in parsed_items for address in parsed.addresses}
    index = clients_by_address(firm_id=connection.firm_id, addresses=addresses)
    new = 0
    for parsed, raw, uid, uidl, _truncated in parsed_items:
        participants = sorted(parsed.addresses)
        message, created = Message.objects.get_or_create(
            firm_id=connection.firm_id,
            key=parsed.key,
            defaults=_message_fields(parsed, raw),
        )
        source_filter = {"uid": uid} if uid is not None else {"uidl": uidl}
        MessageSource.objects.get_or_create(
            connection=connection,
            folder=folder,
            **source_filter,
            defaults={"message": message},
        )
        if created:
            new += 1
            report.new += 1
            if parsed.errors:
                report.kept_raw += 1
            client_ids = message_client_ids(participants=participants, index=index)
            if client_ids:
                result = message_link(
                    message=message, client_ids=client_ids, attachments=parsed.attachments
                )
                report.linked += result.links
                report.documents += result.documents
        else:
            report.duplicates += 1
    return new


def _commit_batch(
    *,
    connection: MailboxConnection,
    folder: MailboxFolder,
    items: list,
    report: SyncReport,
    last_uid: int | None,
) -> None:
    with transaction.atomic():
        new = _store_batch(connection=connection, folder=folder, fetched=items, report=report)
        if last_uid is not None:
            MailboxFolder.objects.filter(pk=folder.pk).update(last_uid=last_uid)
            folder.last_uid = last_uid
        MailboxConnection.objects.filter(pk=connection.pk).update(
            messages_imported=F("messages_imported") + new,
            progress_done=F("progress_done") + len(items),
        )


def _discover_folders(box: ImapMailbox, connection: MailboxConnection) -> None:
    """New server folders appear switched off (the member picks them); INBOX is on.

    Switched-off folders also get their message count (one STATUS each, at most
    ``MAX_STATUS_PER_SYNC`` per run) so the portal can tell the member that mail sits in a
    folder that is not synced. Enabled folders are not asked here: their own sync does.
    """
    names = box.list_folders()
    known = set(connection.folders.values_list("name", flat=True))
    MailboxFolder.objects.bulk_create(
        [
            MailboxFolder(connection=connection, name=name, enabled=name.upper() == "INBOX")
            for name in names
            if name not in known
        ],
        ignore_conflicts=True,
    )
    _count_disabled_folders(box, connection, listed=set(names))


def _count_disabled_folders(
    box: ImapMailbox, connection: MailboxConnection, *, listed: set[str]
) -> None:
    """Record STATUS MESSAGES for switched-off folders; never fails the sync."""
    disabled = connection.folders.filter(enabled=False)
    # Gone from the server (or \Noselect now, which LIST already leaves out): no count.
    disabled.exclude(name__in=listed).exclude(messages=None).update(messages=None)
    candidates = list(disabled.filter(name__in=listed).only("pk", "name", "messages"))
    # Never-counted folders first; the rest in random order, so that a mailbox with more
    # folders than the cap still gets every count refreshed over a few runs.
    random.shuffle(candidates)
    candidates.sort(key=lambda folder: folder.messages is not None)
    counted: list[MailboxFolder] = []
    failures = 0
    for folder in candidates[:MAX_STATUS_PER_SYNC]:
        counted.append(folder)
        try:
            folder.messages = box.status(folder.name).messages
        except FolderNotFound:
            folder.messages = None  # deleted between LIST and STATUS
        except SyncError as exc:
            folder.messages = None
            failures += 1
            logger.warning("mailbox %s: no STATUS for %r: %s", connection.pk, folder.name, exc)
            if failures >= MAX_STATUS_FAILURES:
                # The session may be broken: stop asking (the enabled folders' sync will
                # report it if so) and keep the counts we have.
                break
    MailboxFolder.objects.bulk_update(counted, ["messages"])


def _resync(folder: MailboxFolder, uidvalidity: int, report: SyncReport) -> bool:
    """The server renumbered the folder: forget its UIDs and read it again (messages stay,
    and Message-ID dedupe keeps the re-read from duplicating them)."""
    if folder.reset_count >= MAX_RESETS:
        report.errors += 1
        report.problems.append(f"{folder.name}: UIDVALIDITY changed too often; not re-read")
        return False
    with transaction.atomic():
        MessageSource.objects.filter(folder=folder).delete()
        folder.uidvalidity = uidvalidity
        folder.last_uid = 0
        folder.highestmodseq = None
        folder.state = MailboxFolder.State.RESYNCING
        folder.reset_count += 1
        folder.save(
            update_fields=["uidvalidity", "last_uid", "highestmodseq", "state", "reset_count"]
        )
    return True


def _sync_imap_folder(
    box: ImapMailbox,
    connection: MailboxConnection,
    folder: MailboxFolder,
    report: SyncReport,
    on_batch: BatchHook | None,
) -> None:
    status = box.status(folder.name)
    if folder.uidvalidity is None:
        folder.uidvalidity = status.uidvalidity
        folder.save(update_fields=["uidvalidity"])
    elif folder.uidvalidity != status.uidvalidity and not _resync(
        folder, status.uidvalidity, report
    ):
        return
    if status.uidnext <= folder.last_uid + 1 and folder.state == MailboxFolder.State.IDLE:
        return  # nothing arrived: no SEARCH needed (keeps unchanged syncs fast)
    since = None
    if folder.state in (MailboxFolder.State.INITIAL, MailboxFolder.State.BACKFILLING):
        since = (timezone.now() - datetime.timedelta(days=settings.MAILSYNC_INITIAL_DAYS)).date()
    try:
        uids = box.fetch_uids_since(
            folder.name, folder.last_uid, since_date=since, uidvalidity=folder.uidvalidity
        )
    except UidValidityChanged as exc:
        # Changed between STATUS and EXAMINE: the next run re-reads the folder.
        if exc.actual is not None:
            _resync(folder, exc.actual, report)
        return
    MailboxConnection.objects.filter(pk=connection.pk).update(
        progress_total=F("progress_total") + len(uids)
    )
    size = settings.MAILSYNC_BATCH_SIZE
    done = 0
    for start in range(0, len(uids), size):
        chunk = uids[start : start + size]
        items = [
            (message, "", message.raw, message.internaldate, message.truncated)
            for message in box.fetch(
                folder.name,
                chunk,
                max_size=_max_message_bytes(),
                uidvalidity=folder.uidvalidity,
            )
        ]
        report.fetched += len(items)
        # The cursor moves past the whole chunk: UIDs missing from the FETCH were expunged.
        _commit_batch(
            connection=connection, folder=folder, items=items, report=report, last_uid=chunk[-1]
        )
        done += len(chunk)
        if on_batch is not None:
            on_batch(folder.name, done, len(uids))
    folder.state = MailboxFolder.State.IDLE
    folder.highestmodseq = status.highestmodseq
    folder.save(update_fields=["state", "highestmodseq"])


def _sync_imap(
    connection: MailboxConnection,
    report: SyncReport,
    folder_name: str | None,
    on_batch: BatchHook | None,
) -> None:
    box = ImapMailbox(
        services.connection_settings(connection), services.connection_credentials(connection)
    )
    with box:
        _discover_folders(box, connection)
        folders = connection.folders.all()
        folders = folders.filter(name=folder_name) if folder_name else folders.filter(enabled=True)
        for folder in folders:
            try:
                _sync_imap_folder(box, connection, folder, report, on_batch)
            except FolderNotFound as exc:
                # Renamed or deleted by the member: switch it off, keep syncing the others.
                MailboxFolder.objects.filter(pk=folder.pk).update(enabled=False)
                report.errors += 1
                report.problems.append(f"{folder.name}: {exc.detail}")


def _sync_pop3(
    connection: MailboxConnection, report: SyncReport, on_batch: BatchHook | None
) -> None:
    folder, _ = MailboxFolder.objects.get_or_create(
        connection=connection, name=POP3_FOLDER, defaults={"enabled": True}
    )
    with Pop3Mailbox(
        services.connection_settings(connection), services.connection_credentials(connection)
    ) as box:
        listing = box.uidl()
        seen = set(MessageSource.objects.filter(folder=folder).values_list("uidl", flat=True))
        todo = sorted((number, uidl) for uidl, number in listing.items() if uidl not in seen)
        MailboxConnection.objects.filter(pk=connection.pk).update(
            progress_total=F("progress_total") + len(todo)
        )
        size = settings.MAILSYNC_BATCH_SIZE
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            items = []
            for number, uidl in chunk:
                raw = box.retrieve(number, peek=True)
                items.append((None, uidl, raw, None, False))
            report.fetched += len(items)
            # The cursor is the set of UIDL source rows, committed with the batch.
            _commit_batch(
                connection=connection, folder=folder, items=items, report=report, last_uid=None
            )
            if on_batch is not None:
                on_batch(POP3_FOLDER, start + len(chunk), len(todo))
    MailboxFolder.objects.filter(pk=folder.pk).update(state=MailboxFolder.State.IDLE)


def mailbox_sync(
    connection: MailboxConnection,
    *,
    folder: str | None = None,
    on_batch: BatchHook | None = None,
) -> SyncReport:
    """Sync one mailbox (every enabled folder, or just ``folder``) and record its health.

    Never raises for mailbox problems: they end up on the connection (health, problem code,
    next attempt) and in the report. The caller holds the connection's lease.
    """
    report = SyncReport()
    connection.refresh_from_db()
    if connection.intent != MailboxConnection.Intent.ACTIVE or not connection.secret:
        report.state = connection.get_intent_display()
        return report
    MailboxConnection.objects.filter(pk=connection.pk).update(progress_done=0, progress_total=0)
    try:
        if connection.kind == MailboxConnection.Kind.POP3:
            _sync_pop3(connection, report, on_batch)
        else:
            _sync_imap(connection, report, folder, on_batch)
    except SyncError as error:
        report.errors += 1
        report.problems.append(str(error))
        services.connection_record_failure(connection=connection, error=error)
    except CredentialsUnavailable as exc:
        report.errors += 1
        report.problems.append(str(exc))
        logger.error("mailbox %s: %s", connection.pk, exc)
    else:
        services.connection_record_success(connection=connection, imported=report.new)
    connection.refresh_from_db()
    report.state = connection.health
    return report
