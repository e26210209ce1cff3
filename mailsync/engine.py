"""The sync engine: one mailbox, incrementally, in batches that commit with their cursor.

Each batch is fetched, parsed, stored, linked and committed together with the folder's
cursor (IMAP: UIDVALIDITY + last UID; POP3: the UIDL source rows) in ONE transaction. A
worker killed at any moment therefore loses nothing (the uncommitted batch is fetched again)
and duplicates nothing (what was committed is behind the cursor).

Batches flow through a short pipeline: while one batch is stored and committed, the next one
is already fetched and being parsed in a separate process (a big initial sync only; see
``BatchParser``). A batch only ever leaves memory by being committed, so neither a failing parse
process nor a killed worker can lose one.

One piece (over 500 lines) on purpose: fetching, parsing in a process pool, storing and
committing with the cursor are one pipeline with one invariant (a batch leaves memory only by
being committed); split, each stage would have to restate when a batch may be dropped.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import multiprocessing
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from mailsync import services
from mailsync.adapters import ImapMailbox, Pop3Mailbox
from mailsync.crypto import CredentialsUnavailable
from mailsync.errors import FolderNotFound, SyncError, UidValidityChanged
from mailsync.linking import (
    LinkResult,
    clients_by_address,
    message_client_ids,
    message_link,
    messages_link_new,
)
from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageSource
from mailsync.parsing import (
    ParsedMessage,
    messages_parse,
    parse_process_init,
    stored_messages_parse,
    text_snippet,
)
from portal.blobs import (
    BlobRef,
    BlobStoreUnavailable,
    blob_paths,
    blob_put,
    blobs_confirm,
    blobs_put_many,
)
from portal.bulk_insert import rows_insert

logger = logging.getLogger(__name__)

# A folder whose UIDVALIDITY changed more than MAX_RESETS times within RESET_WINDOW is
# "unstable": re-reading it whole each time would be endless, so from then on each change
# re-reads only the days since the last good sync (dedupe keeps that from duplicating), and
# the member is told. After STABLE_RUNS_TO_TRUST runs with one UIDVALIDITY it is trusted
# again. Nothing ever stops a folder from syncing in silence.
MAX_RESETS = 5
RESET_WINDOW = datetime.timedelta(days=1)
STABLE_RUNS_TO_TRUST = 12
UNSTABLE_REREAD_MARGIN = datetime.timedelta(days=2)
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
    # Where the run's time went (seconds; not shown to anyone, read by bench_mailsync):
    # "fetch" (IMAP/POP3 reads), "parse_wait" (waiting for parsed batches, or parsing here
    # when there is no parse process), "parse_cpu" (CPU used parsing, in either process),
    # "store" (storing, linking and committing batches).
    timings: dict[str, float] = field(default_factory=dict)

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

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds


# Called after each committed batch with (folder name, messages done, messages total). The
# command prints progress with it; tests raise from it to play a worker killed mid-run.
BatchHook = Callable[[str, int, int], None]


class SyncInterrupted(Exception):
    """The run must stop before its next write: its lease was lost (``services.LEASE_LOST``),
    the member stopped or removed the mailbox (``services.STOPPED``), or the folder was
    renumbered under it (``FOLDER_CHANGED``). What it committed stays; the rest is fetched
    again by the run that owns the mailbox next."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FOLDER_CHANGED = "folder_changed"
# (connection id, lease token) of the run in progress, for writes made away from its _Run
# (a folder re-read). Set by mailbox_sync for the length of the run.
_run_lease: contextvars.ContextVar[tuple[int, str]] = contextvars.ContextVar("mailsync_run_lease")


def _lease_check(connection_id: int, lease_token: str) -> None:
    """First statement of every transaction that moves a cursor: the run still owns the
    mailbox and was not told to stop (the lease is renewed; see
    ``services.connection_lease_renew``), or SyncInterrupted rolls the transaction back."""
    reason = services.connection_lease_renew(pk=connection_id, token=lease_token)
    if reason:
        raise SyncInterrupted(reason)


def _max_message_bytes() -> int:
    # Above this a message is kept with its header only (and flagged), so one huge message
    # cannot exhaust a worker's memory.
    return 2 * settings.MAILSYNC_MAX_ATTACHMENT_BYTES + 1024 * 1024


@dataclass
class Fetched:
    """One fetched message on its way to the database."""

    raw: bytes = field(repr=False)
    internaldate: datetime.datetime | None
    truncated: bool = False
    uid: int | None = None  # IMAP
    uidl: str = ""  # POP3
    # The raw mail in the blob store, written as soon as it was fetched (see _with_blobs).
    blob: BlobRef | None = None

    def stored(self) -> BlobRef:
        """The raw mail's blob, written now if it was not yet."""
        if self.blob is None:
            self.blob = blob_put(self.raw)
        return self.blob


# A batch is cut at MAILSYNC_BATCH_SIZE messages or at about this many bytes of raw mail,
# whichever comes first: at most four batches are in memory at a time (see _sync_batches),
# so this bounds the sync's memory however large the messages are.
BATCH_BYTES = 8 * 1024 * 1024


def message_fields(
    parsed: ParsedMessage, raw: bytes | None = None, *, blob: BlobRef | None = None
) -> dict:
    """The stored `Message` columns of a parsed message (synced, or sent from the portal).

    The raw mail goes to the blob store first (``blob``, or ``raw`` written now): the row
    only names it."""
    if blob is None:
        blob = blob_put(raw or b"")
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
        "date_source": parsed.date_source,
        "fingerprint": parsed.fingerprint,
        "in_reply_to": parsed.in_reply_to,
        "references": " ".join(parsed.references),
        "thread_key": parsed.thread_key,
        "snippet": text_snippet(parsed.text),
        "text_body": parsed.text[:200_000],
        "raw_sha256": blob.sha256,
        "size": blob.size,
        "parse_error": bool(parsed.errors),
        "parse_error_detail": "\n".join(parsed.errors)[:5000],
    }


def message_store(
    *,
    firm_id: int,
    parsed: ParsedMessage,
    raw: bytes,
    index: dict[str, set[int]] | None = None,
    occurrence: int = 1,
    blob: BlobRef | None = None,
) -> tuple[Message, LinkResult | None]:
    """The firm's canonical `Message` of ``parsed``, one per Message-ID (``key``): mail seen in
    several folders or mailboxes, or sent from the portal and later synced from Sent, is
    stored once. A new one is linked to every client its addresses name (``index`` from
    `clients_by_address`, read here when not given). Returns the message and what linking
    did, or None when the message was stored before. A concurrent insert of the same key is
    safe: `get_or_create` reads the winner's row in a savepoint. ``occurrence`` tells apart
    messages without a Message-ID that share a key (see `_message_identities`).

    Runs inside the transaction that commits the row. The raw mail goes to the blob store
    before that: ``blob`` when the caller wrote it already, else written here."""
    if blob is None:
        blob = blob_put(raw)
    blobs_confirm([(blob, raw)])
    participants = sorted(parsed.addresses)
    # The clients are looked up first so the message is stored already flagged as linked.
    if index is None:
        index = clients_by_address(firm_id=firm_id, addresses=participants)
    client_ids = message_client_ids(participants=participants, index=index)
    message, created = Message.objects.get_or_create(
        firm_id=firm_id,
        key=parsed.key,
        occurrence=occurrence,
        defaults={**message_fields(parsed, blob=blob), "linked": bool(client_ids)},
    )
    if not created:
        return message, None
    if not client_ids:
        return message, LinkResult()
    return message, message_link(
        message=message, client_ids=client_ids, attachments=parsed.attachments
    )


# --- parsing, in a separate process when the run is big enough ------------------------------

# Starting the parse process costs about a third of a second (a fresh interpreter importing
# the parser), so a run only starts one when at least this many messages are to be fetched;
# below that, batches are parsed in this process.
PARSE_PROCESS_MIN_MESSAGES = 200
PARSE_PROCESSES = 1


class ParsedBatch:
    """A batch being parsed: ``result()`` gives its ParsedMessages, whatever happens to the
    parse process (then the batch is parsed here instead)."""

    def __init__(self, parser: BatchParser, items: list[Fetched], future: Future | None) -> None:
        self._parser = parser
        self._items = items
        self._future = future

    def result(self) -> list[ParsedMessage]:
        start = time.perf_counter()
        parsed: list[ParsedMessage | None] | None = None
        if self._future is not None:
            try:
                parsed, cpu = self._future.result()
                self._parser.report.add_time("parse_cpu", cpu)
            except Exception as exc:
                # The process died (killed, out of memory) or failed: the batch is still
                # here, so parse it in this process and stop using the parse process.
                self._parser.failed(exc)
        if parsed is None:
            parsed = [None] * len(self._items)
        missing = [i for i, one in enumerate(parsed) if one is None]
        if missing:  # not parsed there (or a blob file it could not find): parse them here
            here, cpu = messages_parse(
                [(self._items[i].raw, self._items[i].internaldate) for i in missing]
            )
            self._parser.report.add_time("parse_cpu", cpu)
            for i, one in zip(missing, here, strict=True):
                parsed[i] = one
        self._parser.report.add_time("parse_wait", time.perf_counter() - start)
        for item, one in zip(self._items, parsed, strict=True):
            if item.truncated:
                one.errors.append("message larger than the size limit: header kept only")
        return parsed


class BatchParser:
    """Hands batches to one parse process, so that parsing (the largest cost of an initial
    sync) overlaps fetching and storing on another core.

    The process is started with "spawn": a fresh interpreter that imports only
    ``mailsync.parsing``, so nothing of this process (database connections, threads, locks)
    is inherited. It is started lazily, only for runs of at least
    ``PARSE_PROCESS_MIN_MESSAGES``, and until it has answered a first (empty) request,
    batches are parsed here, so its start-up never holds the sync up. If it cannot be
    started, dies or fails, every batch is parsed here instead, for the rest of the run:
    nothing is lost, it is only slower (and logged).
    """

    def __init__(self, report: SyncReport) -> None:
        self.report = report
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future | None = None
        self._broken = False

    def expect(self, messages: int) -> None:
        """Say how many messages the next folder will bring (decides on the process)."""
        if messages >= PARSE_PROCESS_MIN_MESSAGES and not self._broken and self._pool is None:
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=PARSE_PROCESSES,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=parse_process_init,
                    initargs=(os.getpid(),),
                )
                self._ready = self._pool.submit(messages_parse, [])
            except Exception as exc:
                self.failed(exc)

    def _process_ready(self, timeout: float | None = 0) -> bool:
        if self._broken or self._ready is None:
            return False
        try:
            self._ready.result(timeout=timeout)
        except TimeoutError:
            return False
        except Exception as exc:
            self.failed(exc)
            return False
        return True

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the parse process answers; False if there is none (or it failed)."""
        return self._process_ready(timeout)

    def submit(self, items: list[Fetched]) -> ParsedBatch:
        future = None
        if items and self._pool is not None and self._process_ready():
            # Raw mail already in a blob store on this machine is read there by the parse
            # process; only the paths go through the pipe (the bytes cost both processes
            # about 1 s of CPU per 450 MB when sent).
            written = [item.blob for item in items if item.blob is not None]
            paths = blob_paths(written) if len(written) == len(items) else None
            try:
                if paths is not None:
                    dates = [item.internaldate for item in items]
                    future = self._pool.submit(
                        stored_messages_parse, list(zip(paths, dates, strict=True))
                    )
                else:
                    future = self._pool.submit(
                        messages_parse, [(item.raw, item.internaldate) for item in items]
                    )
            except Exception as exc:
                self.failed(exc)
        return ParsedBatch(self, items, future)

    def failed(self, exc: BaseException) -> None:
        if not self._broken:
            logger.warning("parse process failed (%r): parsing in the sync process", exc)
        self._broken = True
        self.close(wait=False)

    def close(self, *, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


# --- storing --------------------------------------------------------------------------------

# One multi-row INSERT holds every raw message of its rows in memory again (on PostgreSQL
# as one hex-escaped bytea array, twice the bytes), so a batch is inserted in statements of
# about this many bytes: peak RSS stays bounded.
MAX_INSERT_BYTES = 4 * 1024 * 1024


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


@contextlib.contextmanager
def _server_side_binding() -> Iterator[None]:
    """On PostgreSQL (psycopg 3), send the parameters of the statements in this block apart
    from the SQL (server-side binding) instead of quoting them into the statement's text.

    For the message INSERT this means the raw mail is not copied into an escaped SQL
    literal on the client (a second, hex-escaped copy of the batch in memory) and not
    parsed out of the statement by PostgreSQL: measured at 2,000 messages, the INSERTs took
    about half as long and the sync's peak RSS was 30 MB lower. Django binds on the client
    by default (``server_side_binding`` is off) and stays so for everything else: only this
    INSERT, known to work both ways, runs through Django's own server-binding cursor class,
    swapped in on the psycopg connection for the block.
    """
    try:
        from django.db.backends.postgresql.base import ServerBindingCursor
    except ImportError:  # psycopg 2
        yield
        return
    if db.vendor != "postgresql":
        yield
        return
    db.ensure_connection()
    raw_connection = db.connection
    previous = raw_connection.cursor_factory
    raw_connection.cursor_factory = ServerBindingCursor
    try:
        yield
    finally:
        raw_connection.cursor_factory = previous


def _lz4_available() -> bool:
    """Whether PostgreSQL can compress TOASTed values with lz4 (version 14+, built with it)."""
    if db.vendor != "postgresql":
        return False
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


# psycopg's binary type per Message field (by Django's internal type), for COPY. The
# server converts by the column's own type; these only pick the client-side encoder.
_COPY_TYPES = {
    "BigAutoField": "int8",
    "ForeignKey": "int8",
    "CharField": "text",
    "TextField": "text",
    "JSONField": "jsonb",
    "DateTimeField": "timestamptz",
    "BinaryField": "bytea",
    "PositiveBigIntegerField": "int8",
    "PositiveIntegerField": "int4",
    "BooleanField": "bool",
}


def _copy_available() -> bool:
    """Whether the message rows can go in with COPY (PostgreSQL through psycopg 3)."""
    if db.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def _copy_messages(messages: list[Message]) -> None:
    """Store ``messages`` with one COPY ... FROM STDIN (FORMAT BINARY), ids taken first
    from the table's sequence (one SELECT) and set on the instances.

    Against the multi-row INSERT this skips Django's insert compiler (a prepared value
    per field per row) and psycopg's query conversion; rows stream to the server, so the
    batch's raw mail is not held again as one statement. A duplicate key fails the COPY
    like the INSERT (IntegrityError, through Django's error wrapper).
    """
    meta = Message._meta
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, len(messages)],
        )
        for message, (pk,) in zip(messages, cursor.fetchall(), strict=True):
            message.pk = pk
        fields = meta.concrete_fields
        now = timezone.now()
        columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
        sql = f"COPY {db.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN (FORMAT BINARY)"
        start = time.monotonic()
        with db.wrap_database_errors, cursor.cursor.copy(sql) as copy:
            copy.set_types([_COPY_TYPES[field.get_internal_type()] for field in fields])
            for message in messages:
                if message.created is None:
                    message.created = now  # auto_now_add, as an INSERT would set it
                if message.date is not None and message.date.tzinfo is None:
                    message.date = message.date.replace(tzinfo=datetime.UTC)
                copy.write_row([getattr(message, field.attname) for field in fields])
        if db.queries_logged:
            # Not an execute(), so Django would not see it: keep query counts honest.
            db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - start:.3f}"})


def _insert_messages(messages: list[Message], *, lz4: bool, copy: bool = False) -> list[Message]:
    """Store the new messages (setting their ids): one COPY on PostgreSQL (psycopg 3),
    elsewhere INSERTs bounded by size."""
    created: list[Message] = []
    if lz4:
        # Text bodies are compressed by PostgreSQL as they are stored (TOAST; the raw mail
        # is in the blob store now). lz4 compresses mail
        # about as well as the default pglz at several times the speed; SET LOCAL keeps the
        # choice to this transaction.
        with db.cursor() as cursor:
            cursor.execute("SET LOCAL default_toast_compression = lz4")
    if copy:
        _copy_messages(messages)
        return messages
    with _server_side_binding():
        for chunk in _chunks_by_size(messages):
            created += Message.objects.bulk_create(chunk)
    return created


ParsedItem = tuple[ParsedMessage, Fetched]
# A stored message's identity within the firm: (key, occurrence); see Message.occurrence.
Identity = tuple[str, int]


def _message_identities(*, folder: MailboxFolder, parsed_items: list[ParsedItem]) -> list[Identity]:
    """The identity each fetched message is stored under.

    With a Message-ID, the key alone (Message-ID and sender's fingerprint): the same message
    seen twice, in any mailbox or folder, is stored once. Without one, equal content is no
    proof of one message: a server holds two messages under two UIDs (UIDLs) of one folder
    however alike they are (nine wrappers with neither Message-ID nor Date and equal text).
    So the n-th message of this folder with an equal key is occurrence n: each UID of the
    folder keeps its own message, while the same message in another member's mailbox, or
    the folder read again after a UIDVALIDITY change, still finds the stored one.
    """
    without_id = {parsed.key for parsed, _item in parsed_items if not parsed.message_id}
    taken: dict[str, set[int]] = {}
    if without_id:
        # Sources already in this folder are other UIDs: only new UIDs are ever fetched.
        for key, occurrence in Message.objects.filter(
            key__in=without_id, sources__folder=folder
        ).values_list("key", "occurrence"):
            taken.setdefault(key, set()).add(occurrence)
    idents: list[Identity] = []
    for parsed, _item in parsed_items:
        if parsed.message_id:
            idents.append((parsed.key, 1))
            continue
        used = taken.setdefault(parsed.key, set())
        occurrence = 1
        while occurrence in used:
            occurrence += 1
        used.add(occurrence)
        idents.append((parsed.key, occurrence))
    return idents


class _Collided(Exception):
    """Another worker stored one of the batch's new messages first (the insert failed)."""


def _store_batch(
    *,
    connection: MailboxConnection,
    folder: MailboxFolder,
    parsed_items: list[ParsedItem],
    report: SyncReport,
    lz4: bool,
    copy: bool = False,
) -> int:
    """Store one batch's messages and sources (inside the caller's transaction); returns how
    many messages were new to the firm.

    A handful of queries per batch: the batch's keys already known to the firm (one
    SELECT), the new messages (one INSERT returning their ids per few MiB), the sources (one
    INSERT, conflicts ignored: the unique constraints guard them), the client index (one
    SELECT), the links and attachments of the new messages (see ``messages_link_new``). If
    another worker inserts one of the same messages meanwhile, _Collided ends the caller's
    transaction (``_commit_batch`` then stores the batch again, one message at a time,
    which handles that race).
    """
    firm_id = connection.firm_id
    idents = _message_identities(folder=folder, parsed_items=parsed_items)
    known: dict[Identity, int] = {
        (key, occurrence): pk
        for key, occurrence, pk in Message.objects.filter(
            firm_id=firm_id, key__in={key for key, _occurrence in idents}
        ).values_list("key", "occurrence", "pk")
    }
    # The new messages' clients are looked up before they are stored, so each goes in
    # with its `linked` flag already right.
    addresses = {
        address
        for ident, (parsed, _item) in zip(idents, parsed_items, strict=True)
        if ident not in known
        for address in parsed.addresses
    }
    index = clients_by_address(firm_id=firm_id, addresses=addresses) if addresses else {}
    to_create: dict[Identity, Message] = {}
    for ident, (parsed, item) in zip(idents, parsed_items, strict=True):
        if ident not in known and ident not in to_create:
            to_create[ident] = Message(
                firm_id=firm_id,
                key=ident[0],
                occurrence=ident[1],
                linked=bool(message_client_ids(participants=parsed.addresses, index=index)),
                **message_fields(parsed, blob=item.stored()),
            )
    if to_create:
        # Blobs this batch found already stored may be orphans the sweep is deleting.
        blobs_confirm(
            (item.stored(), item.raw)
            for ident, (_parsed, item) in zip(idents, parsed_items, strict=True)
            if ident in to_create
        )
        # No savepoint around it (two round trips a batch): a collision is rare, and
        # redoing the whole batch's transaction is as correct.
        try:
            created_messages = _insert_messages(list(to_create.values()), lz4=lz4, copy=copy)
        except IntegrityError as exc:
            raise _Collided from exc
        if any(message.pk is None for message in created_messages):
            # A database that cannot return ids from a bulk insert: read them back.
            ids = {
                (key, occurrence): pk
                for key, occurrence, pk in Message.objects.filter(
                    firm_id=firm_id, key__in={key for key, _occurrence in to_create}
                ).values_list("key", "occurrence", "pk")
            }
            for message in created_messages:
                message.pk = ids[(message.key, message.occurrence)]
    rows_insert(
        MessageSource,
        ("connection_id", "folder_id", "message_id", "uid", "uidl"),
        [
            (
                connection.pk,
                folder.pk,
                known[ident] if ident in known else to_create[ident].pk,
                item.uid,
                item.uidl if item.uid is None else "",
            )
            for ident, (_parsed, item) in zip(idents, parsed_items, strict=True)
        ],
        ignore_conflicts=True,
    )
    new = 0
    to_link: list[tuple[Message, set[int], list]] = []
    first_seen: set[Identity] = set()
    for ident, (parsed, _item) in zip(idents, parsed_items, strict=True):
        if ident not in to_create or ident in first_seen:
            report.duplicates += 1
            continue
        first_seen.add(ident)
        new += 1
        report.new += 1
        if parsed.errors:
            report.kept_raw += 1
        client_ids = message_client_ids(participants=sorted(parsed.addresses), index=index)
        if client_ids:
            to_link.append((to_create[ident], client_ids, parsed.attachments))
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
    addresses = {address for parsed, _item in parsed_items for address in parsed.addresses}
    index = clients_by_address(firm_id=connection.firm_id, addresses=addresses)
    new = 0
    idents = _message_identities(folder=folder, parsed_items=parsed_items)
    for (_key, occurrence), (parsed, item) in zip(idents, parsed_items, strict=True):
        message, linked = message_store(
            firm_id=connection.firm_id,
            parsed=parsed,
            raw=item.raw,
            blob=item.stored(),
            index=index,
            occurrence=occurrence,
        )
        source_filter = {"uid": item.uid} if item.uid is not None else {"uidl": item.uidl}
        MessageSource.objects.get_or_create(
            connection=connection,
            folder=folder,
            **source_filter,
            defaults={"message": message},
        )
        if linked is not None:
            new += 1
            report.new += 1
            if parsed.errors:
                report.kept_raw += 1
            report.linked += linked.links
            report.documents += linked.documents
        else:
            report.duplicates += 1
    return new


def _commit_batch(
    *,
    connection: MailboxConnection,
    folder: MailboxFolder,
    items: list[Fetched],
    parsed: list[ParsedMessage],
    report: SyncReport,
    last_uid: int | None,
    lz4: bool,
    copy: bool = False,
    lease_token: str = "",
) -> None:
    parsed_items = list(zip(parsed, items, strict=True))
    try:
        _commit_batch_once(
            connection, folder, parsed_items, report, last_uid, lease_token, lz4=lz4, copy=copy
        )
    except _Collided:
        # A concurrent sync of another mailbox of the firm stored one of the same messages
        # first; this transaction is gone, so the batch goes again, one message at a time.
        _commit_batch_once(
            connection, folder, parsed_items, report, last_uid, lease_token, one_by_one=True
        )


def _commit_batch_once(
    connection: MailboxConnection,
    folder: MailboxFolder,
    parsed_items: list[ParsedItem],
    report: SyncReport,
    last_uid: int | None,
    lease_token: str,
    *,
    lz4: bool = False,
    copy: bool = False,
    one_by_one: bool = False,
) -> None:
    with transaction.atomic():
        _lease_check(connection.pk, lease_token)
        if one_by_one:
            new = _store_batch_one_by_one(
                connection=connection, folder=folder, parsed_items=parsed_items, report=report
            )
        else:
            new = _store_batch(
                connection=connection,
                folder=folder,
                parsed_items=parsed_items,
                report=report,
                lz4=lz4,
                copy=copy,
            )
        if last_uid is not None:
            # Only forward, and only in the numbering the batch was fetched in: a batch of
            # an older UIDVALIDITY must not leave its UIDs on a re-read folder.
            moved = MailboxFolder.objects.filter(
                pk=folder.pk, uidvalidity=folder.uidvalidity
            ).update(last_uid=Greatest(F("last_uid"), last_uid))
            if not moved:
                raise SyncInterrupted(FOLDER_CHANGED)
            folder.last_uid = max(folder.last_uid, last_uid)
        MailboxConnection.objects.filter(pk=connection.pk).update(
            messages_imported=F("messages_imported") + new,
            progress_done=F("progress_done") + len(parsed_items),
        )


@dataclass
class _Run:
    """What one ``mailbox_sync`` shares between its folders."""

    connection: MailboxConnection
    report: SyncReport
    parser: BatchParser
    on_batch: BatchHook | None
    lz4: bool
    copy: bool = False  # message rows by COPY (see _copy_messages)
    lease_token: str = ""  # the claim this run holds ("" for a run without one)


# A batch as fetched: its messages and the folder cursor once it is committed (IMAP).
Batch = tuple[list[Fetched], int | None]


def _read_ahead(batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, read by a thread one batch ahead of the caller, so that waiting for the
    mail server overlaps storing the previous batch.

    The thread only talks to the mail server (never to the database). Its errors come out
    here, in order, after the batches read before them. Closing this generator (the caller
    stopped early) stops the thread after the read in progress.
    """
    ready: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the caller, who raises it
            put(("error", exc))
        finally:
            # Stopped early: end the reading generators here, in the thread that ran them.
            with contextlib.suppress(Exception):
                getattr(batches, "close", lambda: None)()

    thread = threading.Thread(target=read, name="mailsync-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _sync_batches(run: _Run, folder: MailboxFolder, batches: Iterator[Batch], total: int) -> None:
    """Commit ``batches`` in order, one transaction each, while the next batches are fetched
    (in a thread, see ``_read_ahead``) and parsed (in the parse process, see
    ``BatchParser``). At most four batches are held: one being committed, one being parsed,
    one read and one being read.

    If fetching fails (the server went away), the batches already fetched are still
    committed before the error goes up; if anything else fails, what was not committed is
    simply fetched again by the next run.
    """
    with contextlib.closing(_read_ahead(_with_blobs(batches))) as ahead:
        _commit_batches(run, folder, ahead, total)


def _with_blobs(batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, each message's raw mail written to the blob store before the batch is
    handed on. Runs in the read-ahead thread (it only talks to the mail server and the blob
    store), so these writes overlap the parsing and the commit of earlier batches; a batch
    is committed only after its blobs are durable."""
    try:
        for items, last_uid in batches:
            refs = blobs_put_many([item.raw for item in items if item.blob is None])
            for item, ref in zip([i for i in items if i.blob is None], refs, strict=True):
                item.blob = ref
            yield items, last_uid
    finally:
        getattr(batches, "close", lambda: None)()


def _commit_batches(run: _Run, folder: MailboxFolder, batches: Iterator[Batch], total: int) -> None:
    """Hand each batch to the parser as it arrives, and commit the one before it meanwhile."""
    report = run.report
    waiting: deque[tuple[list[Fetched], int | None, ParsedBatch]] = deque()
    done = 0

    def commit_oldest() -> None:
        nonlocal done
        items, last_uid, parsing = waiting.popleft()
        parsed = parsing.result()
        start = time.perf_counter()
        report.fetched += len(items)
        _commit_batch(
            connection=run.connection,
            folder=folder,
            items=items,
            parsed=parsed,
            report=report,
            last_uid=last_uid,
            lz4=run.lz4,
            copy=run.copy,
            lease_token=run.lease_token,
        )
        report.add_time("store", time.perf_counter() - start)
        done += len(items)
        if run.on_batch is not None:
            run.on_batch(folder.name, done, total)

    while True:
        start = time.perf_counter()
        try:
            items, last_uid = next(batches)
        except StopIteration:
            break
        except SyncError:
            report.add_time("fetch", time.perf_counter() - start)
            while waiting:
                commit_oldest()
            raise
        report.add_time("fetch", time.perf_counter() - start)
        waiting.append((items, last_uid, run.parser.submit(items)))
        if len(waiting) > PARSE_PROCESSES:
            commit_oldest()
    while waiting:
        commit_oldest()


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


def _resync(folder: MailboxFolder, uidvalidity: int, report: SyncReport) -> None:
    """The server renumbered the folder: forget its UIDs and read it again (messages stay,
    and dedupe keeps the re-read from duplicating them). Counts the change, and marks the
    folder unstable when the server keeps doing it."""
    now = timezone.now()
    started = folder.reset_window_started_at
    if started is None or now - started > RESET_WINDOW:
        folder.reset_count = 0
        folder.reset_window_started_at = now
    folder.reset_count += 1
    folder.stable_runs = 0
    if folder.reset_count > MAX_RESETS and folder.uidvalidity_unstable_since is None:
        folder.uidvalidity_unstable_since = now
        report.problems.append(
            f"{folder.name}: UIDVALIDITY changes at every visit; read by date from now on"
        )
        logger.warning(
            "folder %s: UIDVALIDITY changed %s times within %s; reading it by date window",
            folder.pk,
            folder.reset_count,
            RESET_WINDOW,
        )
    with transaction.atomic():
        _lease_check(*_run_lease.get())
        MessageSource.objects.filter(folder=folder).delete()
        folder.uidvalidity = uidvalidity
        folder.last_uid = 0
        folder.highestmodseq = None
        folder.state = MailboxFolder.State.RESYNCING
        folder.save(
            update_fields=[
                "uidvalidity",
                "last_uid",
                "highestmodseq",
                "state",
                "reset_count",
                "reset_window_started_at",
                "uidvalidity_unstable_since",
                "stable_runs",
            ]
        )


def _count_stable_run(folder: MailboxFolder) -> None:
    """One more run with the same UIDVALIDITY: enough of them and the folder is trusted."""
    if folder.uidvalidity_unstable_since is None:
        return
    folder.stable_runs += 1
    if folder.stable_runs >= STABLE_RUNS_TO_TRUST:
        folder.uidvalidity_unstable_since = None
        folder.reset_count = 0
        folder.reset_window_started_at = None
    folder.save(
        update_fields=[
            "stable_runs",
            "uidvalidity_unstable_since",
            "reset_count",
            "reset_window_started_at",
        ]
    )


def _reread_since(folder: MailboxFolder, connection: MailboxConnection) -> datetime.date | None:
    """How far back the next read of the folder goes (None: the whole folder)."""
    now = timezone.now()
    initial = (now - datetime.timedelta(days=settings.MAILSYNC_INITIAL_DAYS)).date()
    if folder.state in (MailboxFolder.State.INITIAL, MailboxFolder.State.BACKFILLING):
        return initial
    if folder.state == MailboxFolder.State.RESYNCING and folder.uidvalidity_unstable_since:
        # UIDs mean nothing here: read the days since the last good sync again.
        last = connection.last_success_at or now
        return max((last - UNSTABLE_REREAD_MARGIN).date(), initial)
    return None


def _imap_batches(box: ImapMailbox, folder: MailboxFolder, uids: list[int]) -> Iterator[Batch]:
    """The folder's new messages in batches of MAILSYNC_BATCH_SIZE UIDs (one FETCH each),
    cut earlier at BATCH_BYTES of raw mail."""
    size = settings.MAILSYNC_BATCH_SIZE
    for start in range(0, len(uids), size):
        chunk = uids[start : start + size]
        items: list[Fetched] = []
        held = 0
        for message in box.fetch(
            folder.name, chunk, max_size=_max_message_bytes(), uidvalidity=folder.uidvalidity
        ):
            if items and held + len(message.raw) > BATCH_BYTES:
                yield items, items[-1].uid
                items, held = [], 0
            items.append(
                Fetched(
                    raw=message.raw,
                    internaldate=message.internaldate,
                    truncated=message.truncated,
                    uid=message.uid,
                )
            )
            held += len(message.raw)
        # The cursor moves past the whole chunk: UIDs missing from the FETCH were expunged.
        yield items, chunk[-1]


def _sync_imap_folder(box: ImapMailbox, run: _Run, folder: MailboxFolder) -> None:
    report, connection = run.report, run.connection
    status = box.status(folder.name)
    if folder.uidvalidity is None:
        folder.uidvalidity = status.uidvalidity
        folder.save(update_fields=["uidvalidity"])
    elif folder.uidvalidity != status.uidvalidity:
        _resync(folder, status.uidvalidity, report)
    else:
        _count_stable_run(folder)
    if status.uidnext <= folder.last_uid + 1 and folder.state == MailboxFolder.State.IDLE:
        return  # nothing arrived: no SEARCH needed (keeps unchanged syncs fast)
    since = _reread_since(folder, connection)
    uids = box.fetch_uids_since(folder.name, folder.last_uid, since_date=since)
    if box.examined_uidvalidity != folder.uidvalidity and box.examined_uidvalidity is not None:
        # Renumbered between STATUS and EXAMINE (a server that makes up a new value per
        # visit does, whenever the two straddle its clock's second): within this session
        # the numbering holds, so re-read by it now rather than lose this run.
        _resync(folder, box.examined_uidvalidity, report)
        since = _reread_since(folder, connection)
        uids = box.fetch_uids_since(
            folder.name, 0, since_date=since, uidvalidity=folder.uidvalidity
        )
    MailboxConnection.objects.filter(pk=connection.pk).update(
        progress_total=F("progress_total") + len(uids)
    )
    run.parser.expect(len(uids))
    _sync_batches(run, folder, _imap_batches(box, folder, uids), len(uids))
    folder.state = MailboxFolder.State.IDLE
    folder.highestmodseq = status.highestmodseq
    with transaction.atomic():
        _lease_check(connection.pk, run.lease_token)
        folder.save(update_fields=["state", "highestmodseq"])


def _sync_imap(run: _Run, folder_name: str | None) -> None:
    connection = run.connection
    box = ImapMailbox(
        services.connection_settings(connection), services.connection_credentials(connection)
    )
    with box:
        _discover_folders(box, connection)
        folders = connection.folders.all()
        folders = folders.filter(name=folder_name) if folder_name else folders.filter(enabled=True)
        for folder in folders:
            try:
                _sync_imap_folder(box, run, folder)
                folder_gap_check(box, run, folder)
            except FolderNotFound as exc:
                # Renamed or deleted by the member: switch it off, keep syncing the others.
                MailboxFolder.objects.filter(pk=folder.pk).update(enabled=False)
                run.report.errors += 1
                run.report.problems.append(f"{folder.name}: {exc.detail}")


# --- the silent-gap check (sync.gap) --------------------------------------------------------

# A folder is counted again at most this often (one STATUS and one UID SEARCH); "Re-check
# this folder" (MailboxFolder.recheck_requested_at) counts it at the next sync whatever.
GAP_CHECK_INTERVAL = datetime.timedelta(hours=6)


@dataclass
class FolderGap:
    """What the server and the portal count for one folder, over the same window.

    IMAP: the window is what a first sync reads (MAILSYNC_INITIAL_DAYS back, by the
    server's arrival date, as the sync's own SEARCH) and what is behind the folder's cursor
    (newer UIDs are simply not read yet). Within it, every UID the server lists should have
    a source row; one that has none was lost (a row removed, a message the sync skipped).
    POP3: the window is the whole maildrop (STAT and UIDL).
    """

    server_messages: int  # STATUS MESSAGES (POP3: STAT)
    uidnext: int | None  # STATUS UIDNEXT (IMAP only)
    server_in_window: int  # UID SEARCH SINCE ... behind the cursor (POP3: the UIDL listing)
    portal_in_window: int  # of those, the ones the portal holds a source row for
    since: datetime.date | None
    missing: list = field(default_factory=list)  # UIDs (IMAP) or UIDLs (POP3)

    def counts(self) -> dict[str, object]:
        return {
            "server_messages": self.server_messages,
            "uidnext": self.uidnext,
            "server_in_window": self.server_in_window,
            "portal_in_window": self.portal_in_window,
            "since": self.since.isoformat() if self.since else None,
        }


def _gap_check_due(folder: MailboxFolder) -> bool:
    if folder.recheck_requested_at is not None:
        return True
    checked = folder.gap_checked_at
    return checked is None or timezone.now() - checked >= GAP_CHECK_INTERVAL


def _gap_record(folder: MailboxFolder, gap: FolderGap) -> None:
    """Save the check's counts and clear the re-check request this check answered (a
    newer one stays for the next run)."""
    now = timezone.now()
    missing = len(gap.missing)
    first_seen = (folder.gap_first_seen or now) if missing else None
    MailboxFolder.objects.filter(pk=folder.pk).update(
        gap_missing=missing,
        gap_counts=gap.counts(),
        gap_first_seen=first_seen,
        gap_checked_at=now,
    )
    if folder.recheck_requested_at is not None:
        MailboxFolder.objects.filter(
            pk=folder.pk, recheck_requested_at=folder.recheck_requested_at
        ).update(recheck_requested_at=None)
    folder.gap_missing, folder.gap_first_seen, folder.gap_checked_at = missing, first_seen, now
    if missing:
        logger.warning(
            "folder %s: %s messages on the server are missing in the portal (%s)",
            folder.pk,
            missing,
            gap.counts(),
        )


def imap_folder_gap(box: ImapMailbox, folder: MailboxFolder) -> FolderGap | None:
    """Count the folder on the server and in the portal (see FolderGap); None when the
    cursor means nothing to compare with: never synced, being re-read, or renumbered."""
    if (
        folder.uidvalidity is None
        or folder.uidvalidity_unstable_since is not None
        or folder.state != MailboxFolder.State.IDLE
    ):
        return None
    status = box.status(folder.name)
    if status.uidvalidity != folder.uidvalidity:
        return None  # the next sync re-reads the folder
    since = (timezone.now() - datetime.timedelta(days=settings.MAILSYNC_INITIAL_DAYS)).date()
    try:
        uids = box.fetch_uids_since(
            folder.name, 0, since_date=since, uidvalidity=folder.uidvalidity
        )
    except UidValidityChanged:
        return None
    behind = [uid for uid in uids if uid <= folder.last_uid]
    held: set[int] = set()
    if behind:
        held = set(
            MessageSource.objects.filter(
                folder=folder, uid__gte=behind[0], uid__lte=behind[-1]
            ).values_list("uid", flat=True)
        )
    missing = [uid for uid in behind if uid not in held]
    return FolderGap(
        server_messages=status.messages,
        uidnext=status.uidnext,
        server_in_window=len(behind),
        portal_in_window=len(behind) - len(missing),
        since=since,
        missing=missing,
    )


def folder_gap_check(box: ImapMailbox, run: _Run, folder: MailboxFolder) -> None:
    """The silent-gap check of one synced IMAP folder, when due: record what the server
    holds that the portal does not (sync.gap). When the member asked to re-check the
    folder, first re-read exactly the missing UIDs; dedupe (Message-ID + fingerprint, or
    occurrence) finds messages that are still stored and only their source row comes back,
    so nothing is duplicated. Then count again, so the problem shows what is left."""
    if not _gap_check_due(folder):
        return
    gap = imap_folder_gap(box, folder)
    if gap is None:
        return  # nothing to compare yet: counted (and any re-check done) at a later run
    if gap.missing and folder.recheck_requested_at is not None:
        MailboxConnection.objects.filter(pk=run.connection.pk).update(
            progress_total=F("progress_total") + len(gap.missing)
        )
        run.parser.expect(len(gap.missing))
        _sync_batches(run, folder, _imap_batches(box, folder, gap.missing), len(gap.missing))
        gap = imap_folder_gap(box, folder)
    if gap is not None:
        _gap_record(folder, gap)


def _pop3_gap_record(box: Pop3Mailbox, folder: MailboxFolder, listing: dict[str, int]) -> None:
    """POP3 has no window: each sync fetches every UIDL it has no source for, so a gap left
    after the sync is a message it could not store. Counted with STAT beside the UIDLs."""
    count, _size = box.stat()
    held = set(
        MessageSource.objects.filter(folder=folder, uidl__in=list(listing)).values_list(
            "uidl", flat=True
        )
    )
    missing = sorted(uidl for uidl in listing if uidl not in held)
    folder.refresh_from_db(fields=["gap_first_seen", "recheck_requested_at"])
    _gap_record(
        folder,
        FolderGap(
            server_messages=count,
            uidnext=None,
            server_in_window=len(listing),
            portal_in_window=len(listing) - len(missing),
            since=None,
            missing=missing,
        ),
    )


def _pop3_batches(box: Pop3Mailbox, todo: list[tuple[int, str]]) -> Iterator[Batch]:
    """The new messages in batches of MAILSYNC_BATCH_SIZE (or BATCH_BYTES); the cursor is
    the set of UIDL source rows, committed with each batch."""
    items: list[Fetched] = []
    held = 0
    for number, uidl in todo:
        raw = box.retrieve(number, peek=True)
        items.append(Fetched(raw=raw, internaldate=None, uidl=uidl))
        held += len(raw)
        if len(items) >= settings.MAILSYNC_BATCH_SIZE or held >= BATCH_BYTES:
            yield items, None
            items, held = [], 0
    if items:
        yield items, None


def _sync_pop3(run: _Run) -> None:
    connection = run.connection
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
        run.parser.expect(len(todo))
        _sync_batches(run, folder, _pop3_batches(box, todo), len(todo))
        _pop3_gap_record(box, folder, listing)
    with transaction.atomic():
        _lease_check(connection.pk, run.lease_token)
        MailboxFolder.objects.filter(pk=folder.pk).update(state=MailboxFolder.State.IDLE)


def mailbox_sync(
    connection: MailboxConnection,
    *,
    folder: str | None = None,
    on_batch: BatchHook | None = None,
) -> SyncReport:
    """Sync one mailbox (every enabled folder, or just ``folder``) and record its health.

    Never raises for mailbox problems: they end up on the connection (health, problem code,
    next attempt) and in the report. The caller holds the connection's lease (the
    ``connection`` that ``services.connection_claim`` returned): every batch renews it, and
    the run stops before writing anything more once it is lost, or once the member stopped
    or removed the mailbox (checked between batches). A stopped run records no health: the
    run that owns the mailbox now, or the member, decides it.
    """
    report = SyncReport()
    lease_token = connection.lease_token  # before the refresh: ours, not whoever holds it now
    connection.refresh_from_db()
    if connection.intent != MailboxConnection.Intent.ACTIVE or not connection.secret:
        report.state = connection.get_intent_display()
        return report
    MailboxConnection.objects.filter(pk=connection.pk).update(progress_done=0, progress_total=0)
    run = _Run(
        connection=connection,
        report=report,
        parser=BatchParser(report),
        on_batch=on_batch,
        lz4=_lz4_available(),
        copy=_copy_available(),
        lease_token=lease_token,
    )
    lease = _run_lease.set((connection.pk, lease_token))
    try:
        if connection.kind == MailboxConnection.Kind.POP3:
            _sync_pop3(run)
        else:
            _sync_imap(run, folder)
    except SyncError as error:
        report.errors += 1
        report.problems.append(str(error))
        services.connection_record_failure(connection=connection, error=error)
    except CredentialsUnavailable as exc:
        report.errors += 1
        report.problems.append(str(exc))
        logger.error("mailbox %s: %s", connection.pk, exc)
    except BlobStoreUnavailable as exc:
        report.errors += 1
        report.problems.append(f"the blob store failed: {exc}")
        logger.error("mailbox %s: the blob store failed, retrying later: %s", connection.pk, exc)
        services.connection_retry_later(connection=connection)
    except SyncInterrupted as stop:
        logger.info("mailbox %s: sync stopped (%s)", connection.pk, stop.reason)
        connection.refresh_from_db()
        report.state = stop.reason
        return report
    else:
        services.connection_record_success(connection=connection, imported=report.new)
    finally:
        run.parser.close()
        _run_lease.reset(lease)
    connection.refresh_from_db()
    report.state = connection.health
    return report
