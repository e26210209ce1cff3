"""The bounce mailbox of plain-SMTP setups: read DSNs over IMAP, record them on deliveries.

Every delivery is sent with its own Return-Path (`verp.py` here), so the address a DSN was
delivered to names the delivery; when a relay rewrote it, the original message's Message-ID
quoted in the report is the fallback. Each recipient a report names becomes one event through
`delivery_event_record`, keyed by the DSN's own Message-ID and the recipient, so reading a
message twice records it once.

The mailbox is only ever read: EXAMINE (read-only) and BODY.PEEK, no flags, no deletes; the
mail stays on the server for whoever looks after it. The IMAP client is a few lines of
`imaplib` of our own: `invoicing` may not import `mailsync` (see DESIGN.md), whose adapter
is built for members' mailboxes anyway.
"""

from __future__ import annotations

import contextlib
import email
import hashlib
import imaplib
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from invoicing.delivery.bounces import BounceResult, RecipientResult, classify_bounce
from invoicing.delivery.events import delivery_event_record
from invoicing.delivery.models import BounceMailboxCursor, Delivery, DeliveryEvent
from invoicing.delivery.verp import verp_token_from
from invoicing.delivery.webhook_events import failure_outcome
from portal.addresses import normalize_address

logger = logging.getLogger(__name__)

S = Delivery.Status

# Bounces quote the original message; the verdict never needs more than the parser reads.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Messages fetched and recorded per transaction (the cursor moves after each batch).
BATCH_SIZE = 50
# Headers that carry the address a DSN was delivered to, i.e. our VERP Return-Path.
ENVELOPE_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Rcpt-To",
    "To",
    "Return-Path",
)
MESSAGE_ID_RE = re.compile(r"^message-id:[ \t]*(<[^<>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
# The UID item of one message's FETCH response, before or after its body literal.
FETCH_UID_RE = re.compile(rb"[( ]UID (\d+)", re.IGNORECASE)
# The start of a FETCH response ("12 (FLAGS ...)"), as opposed to the rest of one after a literal.
FETCH_START_RE = re.compile(rb"^\d+ \(")


class BounceMailboxError(Exception):
    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class MailboxSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    security: str = "ssl"  # "ssl", "starttls" or "none"
    folder: str = "INBOX"
    timeout: float = 30.0

    @property
    def key(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"[:400]


@dataclass
class PollResult:
    seen: int = 0  # messages read
    recorded: int = 0  # new delivery events
    skipped: int = 0  # messages that are no bounce or name no delivery of ours


def mailbox_from_settings() -> MailboxSettings | None:
    """The configured bounce mailbox, or None while BOUNCE_MAILBOX_HOST is unset."""
    if not settings.BOUNCE_MAILBOX_HOST:
        return None
    return MailboxSettings(
        host=settings.BOUNCE_MAILBOX_HOST,
        port=settings.BOUNCE_MAILBOX_PORT,
        user=settings.BOUNCE_MAILBOX_USER,
        password=settings.BOUNCE_MAILBOX_PASSWORD,
        security=settings.BOUNCE_MAILBOX_SECURITY,
        folder=settings.BOUNCE_MAILBOX_FOLDER,
        timeout=settings.BOUNCE_MAILBOX_TIMEOUT,
    )


def bounce_mailbox_poll(*, mailbox: MailboxSettings, batch_size: int = BATCH_SIZE) -> PollResult:
    """Read the messages that arrived since the last poll and record what they report."""
    result = PollResult()
    with _imap_session(mailbox) as client:
        uidvalidity = _examine(client, mailbox.folder)
        cursor, _ = BounceMailboxCursor.objects.get_or_create(mailbox=mailbox.key)
        if cursor.uidvalidity != uidvalidity:
            # The server renumbered the folder: read it again; event ids stop duplicates.
            cursor.uidvalidity, cursor.last_uid = uidvalidity, 0
            cursor.save(update_fields=["uidvalidity", "last_uid", "updated"])
        uids = _uids_after(client, cursor.last_uid)
        for start in range(0, len(uids), batch_size):
            messages = _fetch(client, uids[start : start + batch_size])
            if not _record_batch(cursor.pk, uidvalidity, messages, result):
                break  # another poll holds the cursor: it reads the same mail
    return result


def _record_batch(
    cursor_pk: int, uidvalidity: int, messages: list[tuple[int, bytes]], result: PollResult
) -> bool:
    with transaction.atomic():
        cursor = (
            BounceMailboxCursor.objects.select_for_update(skip_locked=True)
            .filter(pk=cursor_pk, uidvalidity=uidvalidity)
            .first()
        )
        if cursor is None:
            return False
        for uid, raw in messages:
            if uid <= cursor.last_uid:
                continue
            result.seen += 1
            events = bounce_message_process(raw=raw)
            if events is None:
                result.skipped += 1
            else:
                result.recorded += sum(1 for event in events if event is not None)
            cursor.last_uid = uid
        cursor.save(update_fields=["last_uid", "updated"])
    return True


def bounce_message_process(*, raw: bytes) -> list[DeliveryEvent | None] | None:
    """Record what one message in the bounce mailbox reports.

    Returns None when the message is no report about a delivery of ours (an auto-reply,
    ordinary mail, a bounce for something else), else one entry per delivery event, None
    for an event recorded before.
    """
    verdict = classify_bounce(raw)
    if not _is_report(verdict):
        return None
    message = email.message_from_bytes(raw, policy=policy.compat32)
    pairs = _deliveries_for(message, raw, _facts(verdict))
    if not pairs:
        return None
    dsn_id = _header(message, "Message-ID").strip() or ("sha256:" + hashlib.sha256(raw).hexdigest())
    occurred_at = _date(message)
    events = []
    for delivery, facts in pairs:
        recipient = (facts.recipient or delivery.normalized).lower()
        kind, reason, problem_code = _decide(verdict, facts)
        events.append(
            delivery_event_record(
                delivery=delivery,
                kind=kind,
                source=DeliveryEvent.Source.DSN,
                event_id=f"{dsn_id}:{recipient}"[:255],
                occurred_at=occurred_at,
                reply_code=facts.reply_code or "",
                status_code=_real_status(facts.status) or "",
                reason=reason,
                diagnostic=facts.diagnostic or "",
                problem_code=problem_code,
            )
        )
    return events


def _is_report(verdict: BounceResult) -> bool:
    # Bounces, delivery notices and complaints say something about a delivery; auto-replies
    # ("I am away") and ordinary mail do not.
    return verdict.is_bounce or verdict.reason in ("complaint", "delivered")


def _facts(verdict: BounceResult) -> list[RecipientResult]:
    if verdict.recipients:
        return list(verdict.recipients)
    # Complaints carry one recipient and no per-recipient results.
    return [
        RecipientResult(
            recipient=verdict.recipient,
            action=verdict.action,
            status=verdict.status,
            reply_code=verdict.reply_code,
            hard=verdict.hard,
            reason=verdict.reason,
            diagnostic=verdict.diagnostic,
        )
    ]


def _decide(verdict: BounceResult, facts: RecipientResult) -> tuple[str, str, str | None]:
    """(kind, reason, problem code) for one recipient of a report."""
    if verdict.reason == "complaint":
        return S.COMPLAINED, "complaint", None
    if facts.reason == "delivered":
        return S.DELIVERED, "delivered", None
    outcome = failure_outcome(
        facts.reply_code,
        _real_status(facts.status),
        facts.diagnostic,
        hard=bool(facts.hard),
        recipient=facts.recipient,
    )
    if facts.action == "delayed" and outcome.kind != S.BOUNCED:
        # The sending server is still trying: a delay, not a bounce (yet).
        return S.DEFERRED, outcome.reason, "delivery.soft_bounce"
    return outcome.kind, outcome.reason, outcome.problem_code


def _real_status(status: str | None) -> str | None:
    # The bounce rules give code-less failures a pseudo status (x.0.9xx) for sorting; it is
    # not what the server said, so it is not recorded as such.
    if not status:
        return None
    parts = status.split(".")
    if len(parts) == 3 and parts[1] == "0" and parts[2].isdigit() and int(parts[2]) >= 900:
        return None
    return status


def _deliveries_for(
    message: Message, raw: bytes, facts: list[RecipientResult]
) -> list[tuple[Delivery, RecipientResult]]:
    delivery = _delivery_by_verp(message)
    if delivery is not None:
        # A DSN to a VERP address is about that one delivery. A forwarded address may be
        # reported under its new name; then the first failure reported is the one.
        for item in facts:
            if item.recipient and normalize_address(item.recipient) == delivery.normalized:
                return [(delivery, item)]
        return [(delivery, facts[0])]
    candidates = list(
        Delivery.objects.filter(message_id__in=_original_message_ids(message, raw)).order_by("pk")
    )
    pairs = []
    for item in facts:
        if not item.recipient:
            continue
        normalized = normalize_address(item.recipient)
        for candidate in candidates:
            if candidate.normalized == normalized:
                pairs.append((candidate, item))
    if not pairs and len(candidates) == 1 and len(facts) == 1:
        pairs.append((candidates[0], facts[0]))
    return pairs


def _delivery_by_verp(message: Message) -> Delivery | None:
    for name in ENVELOPE_HEADERS:
        values = [str(value) for value in message.get_all(name, [])]
        for _, address in getaddresses(values):
            token = verp_token_from(address)
            if not token:
                continue
            delivery = (
                Delivery.objects.filter(verp_token=token).first()
                # Some MTAs fold the local part to lower case on the way.
                or Delivery.objects.filter(verp_token__iexact=token).first()
            )
            if delivery is not None:
                return delivery
    return None


def _original_message_ids(message: Message, raw: bytes) -> set[str]:
    own = _header(message, "Message-ID").strip()
    found: set[str] = set()
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message) and inner.get("Message-ID"):
                found.add(str(inner["Message-ID"]).strip())
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            text = _part_text(part)
            found.update(MESSAGE_ID_RE.findall(text))
    if not found:
        # Prose bounces paste the original headers into their text.
        text = raw[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
        found.update(MESSAGE_ID_RE.findall(text))
    found.discard(own)
    return found | {value.strip("<>") for value in found}


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    raw_payload = part.get_payload()
    return raw_payload if isinstance(raw_payload, str) else ""


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return "" if value is None else str(value)


def _date(message: Message) -> datetime:
    with contextlib.suppress(TypeError, ValueError, IndexError):
        parsed = parsedate_to_datetime(_header(message, "Date"))
        if parsed.tzinfo is not None:
            return parsed
    return timezone.now()


# --------------------------------------------------------------------------- IMAP, read-only


@contextlib.contextmanager
def _imap_session(mailbox: MailboxSettings) -> Iterator[imaplib.IMAP4]:
    try:
        if mailbox.security == "ssl":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                mailbox.host,
                mailbox.port,
                ssl_context=ssl.create_default_context(),
                timeout=mailbox.timeout,
            )
        else:
            client = imaplib.IMAP4(mailbox.host, mailbox.port, timeout=mailbox.timeout)
            if mailbox.security == "starttls":
                client.starttls(ssl_context=ssl.create_default_context())
    except (OSError, imaplib.IMAP4.error) as exc:
        raise BounceMailboxError(
            f"cannot connect to {mailbox.host}: {exc}", temporary=True
        ) from exc
    try:
        try:
            client.login(mailbox.user, mailbox.password)
        except imaplib.IMAP4.abort as exc:
            raise BounceMailboxError(f"connection lost: {exc}", temporary=True) from exc
        except imaplib.IMAP4.error as exc:
            raise BounceMailboxError(f"login refused: {exc}", temporary=False) from exc
        try:
            yield client
        except imaplib.IMAP4.abort as exc:
            raise BounceMailboxError(f"connection lost: {exc}", temporary=True) from exc
        except imaplib.IMAP4.error as exc:
            raise BounceMailboxError(f"server refused: {exc}", temporary=False) from exc
        except OSError as exc:
            raise BounceMailboxError(f"connection failed: {exc}", temporary=True) from exc
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def _examine(client: imaplib.IMAP4, folder: str) -> int:
    quoted = '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
    typ, data = client.select(quoted, readonly=True)  # EXAMINE: nothing can change
    if typ != "OK":
        raise imaplib.IMAP4.error(f"cannot open {folder}: {data!r}")
    _, values = client.response("UIDVALIDITY")
    if not values or values[0] is None:
        raise imaplib.IMAP4.error(f"{folder} has no UIDVALIDITY")
    return int(values[-1])


def _uids_after(client: imaplib.IMAP4, last_uid: int) -> list[int]:
    typ, data = client.uid("SEARCH", "UID", f"{last_uid + 1}:*")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"SEARCH failed: {data!r}")
    # "n:*" always matches the newest message, even when its UID is below n.
    return sorted(uid for uid in (int(x) for x in (data[0] or b"").split()) if uid > last_uid)


def _fetch(client: imaplib.IMAP4, uids: list[int]) -> list[tuple[int, bytes]]:
    if not uids:
        return []
    # BODY.PEEK leaves \Seen alone; the partial fetch bounds memory for huge bounces.
    typ, data = client.uid(
        "FETCH", ",".join(map(str, uids)), f"(UID BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>)"
    )
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH failed: {data!r}")
    return fetch_response_messages(data)


def fetch_response_messages(data: list) -> list[tuple[int, bytes]]:
    """(UID, message) for every message in a UID FETCH response as imaplib returns it.

    imaplib splits one message's response at its body literal: a tuple (the text up to the
    literal, the literal), then the text after it as a separate item. Servers put the UID
    where they like: Dovecot before the body (``1 (UID 7 BODY[]<0> {n}`` ... ``)``), others
    after it (``1 (BODY[]<0> {n}`` ... `` UID 7)``), so both places are read. A message whose
    UID is in neither is an error, not skipped: the cursor would move past it and the
    report in it would never be recorded.
    """
    messages: list[tuple[int, bytes]] = []
    waiting: bytes | None = None  # a body whose UID was not in the text before it
    for item in data:
        if isinstance(item, tuple):
            if waiting is not None:
                break
            head, body = item
            match = FETCH_UID_RE.search(head)
            if match:
                messages.append((int(match.group(1)), body))
            else:
                waiting = body
        elif waiting is not None and isinstance(item, bytes) and not FETCH_START_RE.match(item):
            match = FETCH_UID_RE.search(item)
            if match is None:
                break
            messages.append((int(match.group(1)), waiting))
            waiting = None
    if waiting is not None:
        raise imaplib.IMAP4.error("FETCH response without the message's UID")
    return sorted(messages)
