"""Reads for the mailsync pages; each is a fixed number of queries, whatever the volume."""

from __future__ import annotations

import datetime
import functools
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import NamedTuple, overload

from django.core.cache import cache
from django.db import connection as db_connection
from django.db.models import (
    Count,
    Exists,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
)
from django.db.models.functions import Lower
from django.http import HttpRequest
from django.utils.safestring import SafeString

from accounts.models import User
from mailsync.models import (
    IgnoredAddress,
    MailboxConnection,
    MailboxFolder,
    Message,
    MessageAttachment,
    MessageClientLink,
    MessageSource,
)
from portal import joined_rows
from portal.addresses import COMMON_DOMAINS, normalize_address
from portal.cache_once import cached_once
from portal.models import Client, ContactAddress, Firm
from portal.rows import rendered_rows
from portal.selectors import clients_matching

Intent = MailboxConnection.Intent
Health = MailboxConnection.Health


def _visible(firm: Firm) -> QuerySet[MailboxConnection]:
    return (
        MailboxConnection.objects.filter(firm=firm)
        .exclude(intent=Intent.REMOVED)
        .defer("secret")
        .prefetch_related(Prefetch("folders", queryset=MailboxFolder.objects.order_by("name")))
    )


def connections_of_member(*, firm: Firm, user: User) -> list[MailboxConnection]:
    return list(_visible(firm).filter(owner=user))


def connections_shared(*, firm: Firm) -> list[MailboxConnection]:
    return list(_visible(firm).filter(owner__isnull=True))


# Folders that never hold client mail the member would want synced (deleted, spam, drafts,
# the member's own sent mail), by their usual names in English: a switched-off one full of
# mail is normal, not a sign that mail is missing. Compared case-insensitively, alone or
# under the prefixes servers put them under (Courier-style "INBOX.", Gmail's "[Gmail]/" and
# "[Google Mail]/" in the UK and Germany). The adapter's folder list carries no special-use
# flags (RFC 6154), so names are all we can go by.
NON_CLIENT_FOLDER_NAMES = frozenset(
    {
        "trash", "deleted items", "deleted messages", "bin",
        "junk", "junk e-mail", "junk email", "spam",
        "drafts",
        "sent", "sent items", "sent mail", "sent messages",
    }
)  # fmt: skip
_NON_CLIENT_FOLDER_PREFIXES = ("", "inbox.", "inbox/", "[gmail]/", "[google mail]/")
# One pattern rather than a list of the 65 names: on the Problems pages the list cost 0.4 ms
# a request of building and planning the query, for a test on a handful of folder rows.
_NON_CLIENT_FOLDER_PATTERN = "^({})({})$".format(
    "|".join(re.escape(prefix) for prefix in _NON_CLIENT_FOLDER_PREFIXES),
    "|".join(re.escape(name) for name in sorted(NON_CLIENT_FOLDER_NAMES)),
)


class MailboxTrouble(NamedTuple):
    """What the Problems pages report of a firm's mailboxes (each with its ``owner``; each
    folder with its ``connection``)."""

    failing: list[MailboxConnection]  # a problem worth showing (`problem_shown`)
    # Switched off, with mail at the last sync, not named as trash, spam, drafts or sent
    # (sync.labels_excluded).
    excluded: list[MailboxFolder]
    renumbered: list[MailboxFolder]  # renumbered at every visit (sync.uidvalidity_unstable)
    gaps: list[MailboxFolder]  # synced, where the server holds mail the portal lacks (sync.gap)


# What the Problems pages and the Email tab read of a failing mailbox and its owner
# (`MailboxConnection.problem_shown`, troubleshooting's cards, the tab's warning).
_MAILBOX_PARTS = (
    joined_rows.Part(
        MailboxConnection,
        "c",
        (
            "owner_id",
            "email_address",
            "kind",
            "host",
            "port",
            "security",
            "health",
            "problem_code",
            "problem_detail",
            "problem_step",
            "problem_first_seen",
            "problem_last_seen",
            "consecutive_failures",
            "last_attempt_at",
            "last_success_at",
            "next_attempt_at",
            "created",
        ),
    ),
    joined_rows.Part(User, "u", ("first_name", "last_name", "email")),
)
# ... with the folders the Problems pages report.
_TROUBLE_PARTS = (
    *_MAILBOX_PARTS,
    joined_rows.Part(
        MailboxFolder,
        "f",
        (
            "connection_id",
            "name",
            "enabled",
            "messages",
            "reset_count",
            "uidvalidity_unstable_since",
            "gap_missing",
            "gap_counts",
            "gap_first_seen",
            "gap_checked_at",
        ),
    ),
)


# A mailbox (``c``) with its owner (``u``; none for the firm's shared mailbox).
_MAILBOX_WITH_OWNER = (
    f"FROM {MailboxConnection._meta.db_table} c"
    f" LEFT JOIN {User._meta.db_table} u ON u.id = c.owner_id"
)


@functools.cache
def _trouble_from(vendor: str) -> str:
    """The statement after its columns: each active mailbox of a firm with a problem or a
    folder to report, once per such folder: switched off with mail in it, leaving out
    trash, spam, drafts and sent (sync.labels_excluded); synced and renumbered at every
    visit (sync.uidvalidity_unstable); synced with mail on the server the portal lacks
    (sync.gap). ``vendor`` only keys the cache: the case-blind regex is the backend's."""
    iregex = db_connection.operators["iregex"] % "%s"
    return (
        f"{_MAILBOX_WITH_OWNER}"
        f" LEFT JOIN {MailboxFolder._meta.db_table} f ON f.connection_id = c.id AND ("
        f"  (NOT f.enabled AND f.messages > 0 AND NOT (f.name {iregex}))"
        "   OR (f.enabled AND f.uidvalidity_unstable_since IS NOT NULL)"
        "   OR (f.enabled AND f.gap_missing > 0))"
        " WHERE c.firm_id = %s AND c.intent = %s AND (c.problem_code <> '' OR f.id IS NOT NULL)"
        " ORDER BY c.email_address, c.id, f.name"
    )


def mailbox_trouble(*, firm: Firm) -> MailboxTrouble:
    """The firm's active mailboxes with a problem and the folders to report, in one query
    of our own SQL (portal.joined_rows): the same as a filtered relation with
    ``select_related`` and ``only``, whose building and compiling was 1.3 ms of the 3 ms
    this took on each Problems page, for a handful of rows."""
    trouble = MailboxTrouble([], [], [], [])
    rows = joined_rows.select_from(
        _TROUBLE_PARTS,
        _trouble_from(db_connection.vendor),
        [_NON_CLIENT_FOLDER_PATTERN, firm.pk, Intent.ACTIVE],
    )
    connections: dict[int, MailboxConnection] = {}
    for connection, owner, folder in rows:
        if connection.pk in connections:
            # The same mailbox on each of its folders' rows: one instance for all its cards.
            connection = connections[connection.pk]
        else:
            connections[connection.pk] = connection
            connection.owner = owner
            if connection.problem_shown:
                trouble.failing.append(connection)
        if folder is None:
            continue
        folder.connection = connection
        if not folder.enabled:
            trouble.excluded.append(folder)
            continue
        if folder.uidvalidity_unstable_since is not None:
            trouble.renumbered.append(folder)
        if folder.gap_missing and folder.gap_missing > 0:
            trouble.gaps.append(folder)
    return trouble


@functools.cache
def _failing_from(vendor: str, failing: str) -> str:
    """The statement after its columns: active mailboxes of a firm that are failing
    (``failing``, a condition on ``c``) and hold mail of a client. Whether a mailbox holds
    any is asked of it alone, stopping at its first message of the client: on PostgreSQL a
    LATERAL subquery with LIMIT 1 (asked as a correlated EXISTS, PostgreSQL hashed every
    message of each mailbox: 0.1-0.4 s for a client with 11,000 messages); SQLite runs the
    EXISTS mailbox by mailbox as written."""
    probe = (
        f"SELECT 1 FROM {MessageSource._meta.db_table} s"  # noqa: S608 (no values in it)
        " WHERE s.connection_id = c.id AND s.message_id IN ("
        f"  SELECT l.message_id FROM {MessageClientLink._meta.db_table} l"
        "  WHERE l.client_id = %(client)s"
        ") LIMIT 1"
    )
    lateral, exists = (
        (f" CROSS JOIN LATERAL ({probe}) holds", "")
        if vendor == "postgresql"
        else ("", f" AND EXISTS ({probe})")
    )
    return (
        f"{_MAILBOX_WITH_OWNER}{lateral}"
        f" WHERE c.firm_id = %(firm)s AND c.intent = %(intent)s AND {failing}{exists}"
        " ORDER BY c.email_address, c.id"
    )


def failing_mailboxes_of_client(
    *, client: Client, with_problem: bool = False
) -> list[MailboxConnection]:
    """The firm's active mailboxes that synced mail of ``client`` and are failing (each
    with its ``owner``): not healthy (the client's Email tab warns of them), or with
    ``with_problem``, with a problem worth showing (`MailboxConnection.problem_shown`: its
    card on the client's Problems tab). One query, however much mail there is."""
    failing = "c.problem_code <> ''" if with_problem else "c.health <> %(ok)s"
    clause = _failing_from(db_connection.vendor, failing)
    params = {"client": client.pk, "firm": client.firm_id, "intent": Intent.ACTIVE}
    if not with_problem:
        params["ok"] = Health.OK
    found = []
    for connection, owner in joined_rows.select_from(_MAILBOX_PARTS, clause, params):
        connection.owner = owner
        if connection.problem_shown or not with_problem:
            found.append(connection)
    return found


@dataclass(frozen=True, slots=True)
class FailingMailbox:
    """A mailbox that stopped syncing, as a client's Email tab warns of it
    (mailsync/_failing_banner.html reads this and nothing else)."""

    member: str  # whose mailbox ("": the firm's shared one)
    address: str
    health: str

    @classmethod
    def of(cls, connection: MailboxConnection) -> FailingMailbox:
        return cls(str(connection.owner or ""), connection.email_address, connection.health)


@dataclass(frozen=True, slots=True)
class MessageRow:
    """What one email shows on a client's Email tab (mailsync/_message_row.html reads this
    and nothing else: portal.rows renders it once per content)."""

    client_pk: int
    pk: int
    sender: str
    date: datetime.datetime | None
    undated: bool  # no Date header: shown with the time the server received it
    unreadable: bool
    snippet: str
    attachments: tuple[tuple[int | None, str], ...]  # (document id, file name)


@dataclass(frozen=True, slots=True)
class ThreadEnds:
    """What a thread shows above and below its messages on a client's Email tab (its
    heading, its Reply button): mailsync/_thread_head.html and _thread_foot.html."""

    client_pk: int
    subject: str
    latest_pk: int


@dataclass
class Thread:
    """A thread's part of one page of a client's Email tab, oldest message first."""

    key: str
    subject: str  # its oldest message's on the page
    messages: list[MessageRow] = field(default_factory=list)
    html: str = ""  # as the page shows it: heading, messages, Reply

    @property
    def latest(self) -> MessageRow:
        return self.messages[-1]

    def ends(self) -> ThreadEnds:
        return ThreadEnds(self.latest.client_pk, self.subject, self.latest.pk)


EMAIL_TAB_PAGE_SIZE = 50


@dataclass
class ThreadPage:
    """One page of a client's Email tab: its threads, and whether older mail follows."""

    threads: list[Thread]
    number: int
    has_older: bool


# What the tab shows of a message: a thread's messages carry long reference lists and
# address lists (JSON) that it never reads, and their text is loaded when a preview is
# opened (mailsync:message_text): 50 replies quoting their thread are megabytes. Read as
# plain rows: 50 Message instances and a prefetch of their attachments were half of the
# page's Python.
_TAB_PARTS = (
    joined_rows.Part(
        Message,
        "m",
        (
            "pk",
            "thread_key",
            "subject",
            "from_name",
            "from_address",
            "date",
            "date_source",
            "parse_error",
            "snippet",
        ),
    ),
)
# ... and of the attachments the client got from a message.
_ATTACHMENT_PARTS = (joined_rows.Part(MessageAttachment, "a", ("message", "document", "filename")),)


def client_threads_page(*, client: Client, number: int = 1) -> ThreadPage:
    """Page ``number`` of the client's mail, newest first, EMAIL_TAB_PAGE_SIZE messages a
    page (a thread that spans two pages shows its part on each). Two queries: the page's
    messages, and their attachments for this client."""
    size = EMAIL_TAB_PAGE_SIZE
    number = min(max(1, number), 1_000_000)  # an offset the database can hold
    # The page's ids are one range of the client's links' index (each link carries its
    # message's date: messageclientlink_newest_idx), so a client with tens of thousands of
    # messages does not have every one of them read; one more than a page tells whether
    # older mail follows. Asked as a subquery: reading the ids first cost a query more
    # (building it and a round trip); joining the links to the messages instead made a late
    # page read every message before it (an OFFSET applies after the join). Our own SQL
    # (portal.joined_rows), as the attachments': the two querysets took a third of the tab's
    # Python to build.
    messages = joined_rows.values_from(
        _TAB_PARTS,
        f"FROM {Message._meta.db_table} m WHERE m.id IN ("  # noqa: S608 (values are parameters)
        f" SELECT l.message_id FROM {MessageClientLink._meta.db_table} l WHERE l.client_id = %s"
        " ORDER BY l.message_date DESC, l.message_id DESC LIMIT %s OFFSET %s"
        # A message's date never changes once stored: in its date's order, as the links are.
        ") ORDER BY m.date DESC, m.id DESC",
        [client.pk, size + 1, (number - 1) * size],
    )
    return ThreadPage(
        threads=_threads(client, messages[:size]),
        number=number,
        has_older=len(messages) > size,
    )


def _threads(client: Client, messages: list[tuple]) -> list[Thread]:
    """``messages`` (`_TAB_PARTS` rows, newest first) of the client grouped into threads
    (References / In-Reply-To), newest thread first, each message with the attachments
    the client got from it (one query)."""
    attachments: dict[int, list[tuple[int | None, str]]] = defaultdict(list)
    if messages:
        ids = [message[0] for message in messages]
        for message_id, document_id, filename in joined_rows.values_from(
            _ATTACHMENT_PARTS,
            f"FROM {MessageAttachment._meta.db_table} a WHERE a.client_id = %s"
            f" AND a.message_id IN ({joined_rows.placeholders(ids)}) ORDER BY a.id",
            [client.pk, *ids],
        ):
            attachments[message_id].append((document_id, filename))
    threads: dict[str, Thread] = {}
    for pk, key, subject, name, address, date, date_source, parse_error, snippet in messages:
        thread = threads.get(key)
        if thread is None:
            thread = threads[key] = Thread(key, subject)
        thread.subject = subject  # newest first: the oldest message's, in the end
        thread.messages.append(
            MessageRow(
                client_pk=client.pk,
                pk=pk,
                sender=name or address,
                date=date,
                undated=date_source in ("server", "received"),
                unreadable=bool(parse_error),
                snippet=snippet,
                attachments=tuple(attachments.get(pk, ())),
            )
        )
    for thread in threads.values():
        thread.messages.reverse()  # oldest first inside a thread
    return list(threads.values())


# --- unlinked mail: "link this address to a client" ---------------------------------------


@dataclass
class UnlinkedAddress:
    """An address in the firm's unlinked mail, with what that mail says about it."""

    address: str  # normalised, as in Message.participants
    messages: int  # unlinked messages that name it
    latest: datetime.datetime | None  # the newest of them (None: none had a date)
    sample_pk: int  # its most recently synced message, for the sample subject
    first_synced: datetime.datetime
    last_synced: datetime.datetime
    subject: str = ""  # filled for one page by `unlinked_addresses_describe`
    name: str = ""  # the display name it sent mail with, if it did


@dataclass
class UnlinkedSummary:
    addresses: int
    first_seen: datetime.datetime
    last_seen: datetime.datetime


def _address_rows_postgresql(firm: Firm, viewer: User | None) -> list[UnlinkedAddress]:
    """One row per address of the firm's unlinked mail, counted by PostgreSQL itself: it
    splits `participants` into addresses, so what comes back grows with the number of
    correspondents, not of messages (one query)."""
    message = Message._meta.db_table
    source, mailbox = MessageSource._meta.db_table, MailboxConnection._meta.db_table
    params: list[object] = [firm.pk]
    seen_by = ""
    if viewer is not None:
        seen_by = f"""
          AND EXISTS (
            SELECT 1 FROM {source} s JOIN {mailbox} c ON c.id = s.connection_id
            WHERE s.message_id = m.id AND (c.owner_id = %s OR c.owner_id IS NULL)
          )"""  # noqa: S608 (table names from the models; the value is a parameter)
        params.append(viewer.pk)
    sql = f"""
        SELECT a.address, COUNT(*), MAX(m.date), MAX(m.id), MIN(m.created), MAX(m.created)
        FROM {message} m
        CROSS JOIN LATERAL unnest(string_to_array(btrim(m.participants), ' ')) AS a(address)
        WHERE m.firm_id = %s AND m.participants <> ''
          AND NOT m.linked{seen_by}
        GROUP BY a.address
    """  # noqa: S608 (table names from the models; the values are parameters)
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [UnlinkedAddress(*row) for row in cursor.fetchall()]


def _later(a: datetime.datetime | None, b: datetime.datetime | None) -> datetime.datetime | None:
    return b if a is None or (b is not None and b > a) else a


def _address_rows_portable(firm: Firm, viewer: User | None) -> list[UnlinkedAddress]:
    """The same rows on any database (SQLite has no way to split a string in a query): the
    database groups unlinked messages by their participants (messages between the same
    people share a row), and the addresses are counted here (one query)."""
    messages = Message.objects.filter(firm=firm, linked=False)
    if viewer is not None:
        messages = messages.filter(
            Exists(
                MessageSource.objects.filter(message=OuterRef("pk")).filter(
                    Q(connection__owner=viewer) | Q(connection__owner__isnull=True)
                )
            )
        )
    groups = (
        messages.exclude(participants="")
        .order_by()
        .values_list("participants")
        .annotate(Count("pk"), Max("date"), Max("pk"), Min("created"), Max("created"))
    )
    found: dict[str, UnlinkedAddress] = {}
    for participants, count, latest, sample, first, last in groups:
        for address in participants.split():
            row = found.get(address)
            if row is None:
                found[address] = UnlinkedAddress(address, count, latest, sample, first, last)
                continue
            row.messages += count
            row.latest = _later(row.latest, latest)
            row.sample_pk = max(row.sample_pk, sample)
            row.first_synced = min(row.first_synced, first)
            row.last_synced = max(row.last_synced, last)
    return list(found.values())


def _settled_addresses(firm: Firm) -> set[str]:
    """Addresses in unlinked mail that need no decision: the firm's own mailboxes and
    members, and the addresses a member chose to ignore (one query)."""
    mailboxes = MailboxConnection.objects.filter(firm=firm).order_by().values_list("email_address")
    members = User.objects.filter(memberships__firm=firm).order_by().values_list("email")
    ignored = IgnoredAddress.objects.filter(firm=firm).order_by().values_list("normalized")
    rows = mailboxes.union(members, ignored)
    settled = {normalize_address(address) for (address,) in rows if address}
    if firm.reply_to_email:
        settled.add(normalize_address(firm.reply_to_email))
    return settled


_OLDEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def unlinked_addresses(*, firm: Firm, viewer: User | None = None) -> list[UnlinkedAddress]:
    """Every address of the firm's unlinked mail that is not the firm's own and not
    ignored, with how many unlinked messages name it, newest first. Two queries, whatever
    the volume (one when there is no unlinked mail).

    With ``viewer``, only mail that came through the viewer's own mailboxes or the firm's
    shared one: unlinked mail is by definition not client mail, so it is mostly a member's
    own correspondence, which colleagues should not browse."""
    if db_connection.vendor == "postgresql":
        rows = _address_rows_postgresql(firm, viewer)
    else:
        rows = _address_rows_portable(firm, viewer)
    if not rows:
        return []
    settled = _settled_addresses(firm)
    rows = sorted((row for row in rows if row.address not in settled), key=lambda r: r.address)
    rows.sort(key=lambda row: row.latest or _OLDEST, reverse=True)  # stable: ties by address
    return rows


@dataclass(frozen=True, slots=True)
class UnlinkedRow:
    """One address as the unlinked-mail page shows it (mailsync/_unlinked_row.html reads
    this and nothing else, and is rendered once per content: portal.rows)."""

    address: str
    name: str
    messages: int
    latest: datetime.datetime | None
    subject: str
    next_path: str  # the page the Ignore button comes back to

    @classmethod
    def of(cls, row: UnlinkedAddress, *, next_path: str) -> UnlinkedRow:
        """``row`` after `unlinked_addresses_describe` filled it in."""
        return cls(row.address, row.name, row.messages, row.latest, row.subject, next_path)


def unlinked_rows(rows: list[UnlinkedAddress], *, request: HttpRequest) -> list[SafeString]:
    """The HTML rows of one page of unlinked addresses, for ``request``'s member."""
    next_path = request.get_full_path()
    shown = [UnlinkedRow.of(row, next_path=next_path) for row in rows]
    return rendered_rows("mailsync/_unlinked_row.html", shown, request=request)


def unlinked_addresses_describe(rows: list[UnlinkedAddress]) -> None:
    """Fill in the sample subject and display name of one page of rows (one query)."""
    if not rows:
        return
    samples = {
        pk: (subject, from_address, from_name)
        for pk, subject, from_address, from_name in Message.objects.filter(
            pk__in={row.sample_pk for row in rows}
        ).values_list("pk", "subject", "from_address", "from_name")
    }
    for row in rows:
        subject, from_address, from_name = samples.get(row.sample_pk, ("", "", ""))
        row.subject = subject
        row.name = from_name if from_address == row.address else ""


# The dashboard shows the unlinked-mail summary on every load, and counting it reads every
# unlinked message of the firm (and checks each of the firm's messages for a link): it is
# kept in the cache this long, and forgotten at once when a member links, ignores or
# restores an address (`unlinked_summary_forget`). Newly synced mail shows within it.
UNLINKED_SUMMARY_SECONDS = 300


_GENERATION_KEY = "mailsync:unlinked-generation:{}"


def _generation(firm_pk: int) -> int:
    """The firm's unlinked-mail generation: cached counts of another generation are stale."""
    return cache.get(_GENERATION_KEY.format(firm_pk), 0)


def _summary_key(firm_pk: int) -> str:
    return f"mailsync:unlinked-summary-once:{firm_pk}:{_generation(firm_pk)}"


def _summary_meanwhile_key(firm: Firm) -> str:
    # The firm's creation time too: this key outlives generations, and must not outlive
    # the firm (a reused id starts afresh).
    return f"mailsync:unlinked-summary-last:{firm.pk}:{firm.created.timestamp()}"


def unlinked_summary(*, firm: Firm) -> UnlinkedSummary | None:
    """What the `sync.not_linked` problem reports: the addresses of unlinked mail that
    nobody has decided about (the firm's own and ignored ones do not count), and when their
    mail was synced. From the cache when counted in the last UNLINKED_SUMMARY_SECONDS;
    otherwise two queries, whatever the volume (one when there is no unlinked mail), by one
    request of all those asking at once (`cached_once`).
    """

    def count() -> UnlinkedSummary | None:
        rows = unlinked_addresses(firm=firm)
        if not rows:
            return None
        return UnlinkedSummary(
            addresses=len(rows),
            first_seen=min(row.first_synced for row in rows),
            last_seen=max(row.last_synced for row in rows),
        )

    # While one request counts after an address was linked (0.2 s for a million messages),
    # the others show the count from before it rather than wait: with a link every second,
    # a fifth of every Problems page's requests waited for it (a p95 of 360 ms). The member
    # who linked sees their own link on the unlinked-mail page, whose list is not shared.
    return cached_once(
        _summary_key(firm.pk),
        count,
        fresh_seconds=UNLINKED_SUMMARY_SECONDS,
        meanwhile=_summary_meanwhile_key(firm),
    )


def unlinked_summary_forget(*, firm: Firm) -> None:
    """Count the summary and the unlinked-mail list afresh next time (an address was
    linked, ignored or restored)."""
    # A new generation: the summary and every member's cached list are out of date at once.
    cache.set(_GENERATION_KEY.format(firm.pk), time.time_ns(), None)


# The unlinked-mail page groups every unlinked message of the firm by address (50,000
# messages took 70-100 ms of database time, more than anything else a page does). Each
# member's list is kept this long, and dropped at once by `unlinked_summary_forget`; newly
# synced mail shows within it, like the summary.
UNLINKED_ROWS_SECONDS = 60


# Dates in the cached rows: microseconds since the epoch (UTC). Unpickling a thousand rows
# with three datetime objects each took 0.9 ms of every view of the page.
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_DATE_FIELDS = ("latest", "first_synced", "last_synced")


def _to_micros(value: datetime.datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int | None) -> datetime.datetime | None:
    return None if value is None else _EPOCH + value * _MICROSECOND


class UnlinkedRows(Sequence[UnlinkedAddress]):
    """A member's unlinked addresses as the cache keeps them: a tuple of plain tuples, dates
    as integers, each made an `UnlinkedAddress` only when a page reads it. A busy member has
    a thousand addresses or more and a page shows 25: unpickling a thousand dataclass
    instances on every view took longer than the page's queries."""

    def __init__(self, rows: tuple[tuple, ...]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> UnlinkedAddress: ...
    @overload
    def __getitem__(self, index: slice) -> list[UnlinkedAddress]: ...
    def __getitem__(self, index: int | slice) -> UnlinkedAddress | list[UnlinkedAddress]:
        if isinstance(index, slice):
            return [_unlinked_address(row) for row in self._rows[index]]
        return _unlinked_address(self._rows[index])


_NAMES = tuple(f.name for f in fields(UnlinkedAddress))
_DATE_AT = tuple(_NAMES.index(name) for name in _DATE_FIELDS)


def _unlinked_address(row: tuple) -> UnlinkedAddress:
    values = list(row)
    for at in _DATE_AT:
        values[at] = _from_micros(values[at])
    return UnlinkedAddress(*values)


def _unlinked_address_tuples(*, firm: Firm, viewer: User) -> tuple[tuple, ...]:
    rows = unlinked_addresses(firm=firm, viewer=viewer)
    return tuple(
        tuple(
            _to_micros(getattr(row, name)) if name in _DATE_FIELDS else getattr(row, name)
            for name in _NAMES
        )
        for row in rows
    )


def unlinked_addresses_cached(*, firm: Firm, viewer: User) -> UnlinkedRows:
    """`unlinked_addresses` for ``viewer``, from the cache when counted in the last
    UNLINKED_ROWS_SECONDS and nothing was linked, ignored or restored since."""
    # The key names the tuples' form: a process of the last release reading them (or this
    # one reading an earlier form) during a deploy would misread them.
    key = f"mailsync:unlinked-rows-2:{firm.pk}:{viewer.pk}:{_generation(firm.pk)}"
    rows = partial(_unlinked_address_tuples, firm=firm, viewer=viewer)
    return UnlinkedRows(cached_once(key, rows, fresh_seconds=UNLINKED_ROWS_SECONDS))


def unlinked_address_name(*, firm: Firm, address: str) -> str:
    """The display name ``address`` last sent mail with ("" if none): the natural name for
    a new contact (one query)."""
    return (
        Message.objects.filter(firm=firm, from_address=address)
        .exclude(from_name="")
        .order_by("-date", "-pk")
        .values_list("from_name", flat=True)
        .first()
        or ""
    )


def clients_for_linking(
    *, firm: Firm, query: str = "", address: str = "", limit: int = 20
) -> list[Client]:
    """Clients to link ``address`` to: those matching ``query`` (name, contact name or
    address, like the client list's search), or without a query those whose contacts use
    the address's domain (not for public mail services such as gmail.com). One query."""
    clients = Client.objects.filter(firm=firm)
    query = query.strip()
    domain = address.rpartition("@")[2]
    if query:
        clients = clients_matching(clients, query=query)
    elif domain and domain not in COMMON_DOMAINS:
        clients = clients.filter(
            Exists(
                ContactAddress.objects.filter(
                    contact__client=OuterRef("pk"), normalized__endswith=f"@{domain}"
                )
            )
        )
    else:
        return []
    return list(clients.order_by("status", Lower("display_name"), "pk")[:limit])
