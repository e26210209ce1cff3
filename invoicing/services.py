"""Changes to invoices, their deliveries, Pay Now links, payments and the suppression list.

Sending is an outbox: `invoice_send` writes one queued `Delivery` per recipient and enqueues
their ids once the transaction commits; `deliveries_send` (run by the task) claims them in
groups, sends each group over one connection and records what the server said, so the
delivery record never claims more than happened (see "the sender" below for what a crash
between sending and recording leaves).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import smtplib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from email.utils import make_msgid
from enum import Enum
from itertools import islice
from typing import Any

import requests
from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Sum
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from accounts.models import AuditEntry, Membership, Role, SupportGrant, User
from invoicing import smtp_pipelining
from invoicing.emails import (
    Envelope,
    InvoiceEmailBuilder,
    PreparedEmail,
    invoice_paid_notify,
)
from invoicing.events import (
    active_suppression,
    active_suppressions,
    classify_reply,
    delivery_event_record,
)
from invoicing.models import (
    Delivery,
    DeliveryEvent,
    FirmBillingSettings,
    Invoice,
    InvoiceLine,
    PayLink,
    Payment,
    Suppression,
)
from invoicing.selectors import invoice_recipients, suppression_removal_times
from invoicing.verp import new_verp_token
from portal.addresses import AddressError, normalize_address, validate_address
from portal.emails import platform_domain
from portal.models import Client, ContactAddress, Firm

logger = logging.getLogger(__name__)

S = Delivery.Status
NUMBER_ATTEMPTS = 5
# AddressError codes that mean "a character no address may hold" (PROBLEMS.md's
# send.invalid_recipient_chars); any other refusal is a document not sent.
CHARACTER_CODES = {"forbidden_character", "space", "invisible_character"}
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


class InvoiceError(ValueError):
    """An action refused, with a message fit to show the member."""


@dataclass(frozen=True)
class LineData:
    description: str
    quantity: Decimal
    unit_price: Decimal


# --- invoices ---------------------------------------------------------------------------


def _next_number(firm: Firm) -> int:
    return (Invoice.objects.filter(firm=firm).aggregate(last=Max("number"))["last"] or 0) + 1


def _lines_replace(invoice: Invoice, lines: Sequence[LineData]) -> None:
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            description=line.description,
            quantity=line.quantity,
            unit_price=line.unit_price,
            position=position,
        )
        for position, line in enumerate(lines)
    )


def invoice_create(
    *,
    firm: Firm,
    client: Client,
    created_by: User | None,
    due_date: date,
    lines: Sequence[LineData],
    currency: str = "EUR",
    issue_date: date | None = None,
    notes: str = "",
) -> Invoice:
    """Create a draft with the firm's next number; two members saving at once both succeed."""
    if client.firm_id != firm.pk:
        raise InvoiceError(_("This client belongs to another firm."))
    for attempt in range(NUMBER_ATTEMPTS):
        try:
            with transaction.atomic():
                invoice = Invoice.objects.create(
                    firm=firm,
                    client=client,
                    number=_next_number(firm),
                    currency=currency,
                    issue_date=issue_date or timezone.localdate(),
                    due_date=due_date,
                    notes=notes,
                    client_name=client.display_name,
                    created_by=created_by,
                )
                _lines_replace(invoice, lines)
                return invoice
        except IntegrityError:
            # Another request took the same number between our read and our insert: the
            # unique constraint caught it, so read the new maximum and try again.
            if attempt == NUMBER_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@transaction.atomic
def invoice_update(
    *,
    invoice: Invoice,
    client: Client,
    due_date: date,
    lines: Sequence[LineData],
    currency: str,
    issue_date: date,
    notes: str,
) -> Invoice:
    """Change a draft. A sent invoice is a record the client holds: void it instead."""
    if invoice.status != Invoice.Status.DRAFT:
        raise InvoiceError(_("Only a draft can be edited. Void this invoice and create a new one."))
    if client.firm_id != invoice.firm_id:
        raise InvoiceError(_("This client belongs to another firm."))
    invoice.client = client
    invoice.client_name = client.display_name
    invoice.due_date = due_date
    invoice.currency = currency
    invoice.issue_date = issue_date
    invoice.notes = notes
    invoice.save()
    _lines_replace(invoice, lines)
    return invoice


@transaction.atomic
def invoice_void(*, invoice: Invoice) -> Invoice:
    # Locked: a sender claiming this invoice's deliveries holds the row (see `_group_claim`),
    # so either it sees the void and cancels them, or the void waits for its claim.
    current = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if current.status == Invoice.Status.PAID:
        raise InvoiceError(_("A paid invoice cannot be voided."))
    invoice.status = Invoice.Status.VOID
    invoice.save(update_fields=["status"])
    # Nobody should be asked to pay a void invoice through a link they still hold.
    PayLink.objects.filter(invoice=invoice, revoked_at=None).update(revoked_at=timezone.now())
    return invoice


# --- sending ----------------------------------------------------------------------------


def _message_id(domain: str | None = None) -> str:
    return make_msgid(domain=domain or platform_domain())


def _delivery_prepare(
    *, invoice: Invoice, address: str, normalized: str, is_test: bool = False
) -> Delivery:
    """Write the delivery row; a blocked or malformed address is recorded, never dropped."""
    delivery = Delivery.objects.create(
        firm_id=invoice.firm_id,
        invoice=invoice,
        client_id=invoice.client_id,
        address=address,
        normalized=normalized,
        is_test=is_test,
        verp_token=new_verp_token(),
        message_id=_message_id(),
    )
    try:
        validate_address(address)
    except AddressError as exc:
        _record_invalid(delivery, exc)
        return delivery
    if not is_test:
        suppression = active_suppression(firm_id=invoice.firm_id, normalized=normalized)
        if suppression is not None:
            _record_suppressed(delivery, suppression)
    return delivery


def _record_invalid(delivery: Delivery, exc: AddressError) -> None:
    delivery_event_record(
        delivery=delivery,
        kind=S.FAILED,
        source="portal",
        reason=exc.code,
        diagnostic=exc.message,
        problem_code=(
            "send.invalid_recipient_chars"
            if exc.code in CHARACTER_CODES
            else "delivery.not_sent_rejected_document"
        ),
    )


def _record_suppressed(
    delivery: Delivery, suppression: Suppression, *, locked: bool = False
) -> None:
    delivery_event_record(
        delivery=delivery,
        locked=locked,
        kind=S.SUPPRESSED,
        source="portal",
        reason=suppression.reason,
        diagnostic=str(suppression.get_reason_display()),
        # The guide differs: a blocked-after-failures address may work again soon.
        problem_code=(
            "delivery.blocked_repeated_failures"
            if suppression.reason == Suppression.Reason.REPEATED_SOFT
            else "delivery.suppressed"
        ),
    )


def _enqueue(deliveries: Sequence[Delivery]) -> None:
    from invoicing.tasks import deliveries_send_task

    ids = [d.pk for d in deliveries if d.status == S.QUEUED]
    if ids:
        transaction.on_commit(lambda: deliveries_send_task.delay(ids))


def _revoke_links(*, invoice: Invoice, normalized: Sequence[str]) -> None:
    # A resend renews the link: the one in the earlier email stops working.
    PayLink.objects.filter(
        invoice=invoice,
        revoked_at=None,
        delivery__normalized__in=list(normalized),
        delivery__is_test=False,
    ).update(revoked_at=timezone.now())


# A delivery in these states has no outcome yet: sending the invoice again to its address
# would email the client twice (a double click, a reload, a colleague pressing Send too).
IN_FLIGHT = (S.QUEUED, S.SENDING)


def _in_flight(invoice_ids: Sequence[int]) -> set[tuple[int, str]]:
    """(invoice id, address) pairs with a send that has no outcome yet. Read under the
    invoices' row locks, so a concurrent send of the same invoice has committed or waits."""
    return set(
        Delivery.objects.filter(
            invoice_id__in=list(invoice_ids), is_test=False, status__in=IN_FLIGHT
        ).values_list("invoice_id", "normalized")
    )


def _already_sending() -> str:
    return _(
        "This invoice is already being sent to every recipient. Each one's progress is shown below."
    )


@transaction.atomic
def invoice_send(*, invoice: Invoice) -> list[Delivery]:
    """Queue one email per address of the client that receives invoices, except addresses
    a previous send of this invoice is still queued or sending to: sending is idempotent per
    invoice and recipient until the previous send has an outcome."""
    # Two sends of one invoice queue one after the other: the second sees the first's
    # deliveries below.
    current = Invoice.objects.select_for_update().get(pk=invoice.pk)
    invoice.status = current.status
    if invoice.status in (Invoice.Status.VOID, Invoice.Status.PAID):
        raise InvoiceError(_("A void or paid invoice cannot be sent."))
    if not invoice.lines.exists():
        raise InvoiceError(_("Add at least one line before sending the invoice."))
    recipients = invoice_recipients(invoice=invoice)
    if not recipients:
        raise InvoiceError(
            _(
                "%(client)s has no email address that receives invoices. Add one on the "
                "client's Contacts tab, then send again."
            )
            % {"client": invoice.client.display_name}
        )
    busy = _in_flight([invoice.pk])
    recipients = [r for r in recipients if (invoice.pk, r.normalized) not in busy]
    if not recipients:
        raise InvoiceError(_already_sending())
    if invoice.status == Invoice.Status.DRAFT:
        invoice.client_name = invoice.client.display_name
        invoice.save(update_fields=["client_name"])
    _revoke_links(invoice=invoice, normalized=[r.normalized for r in recipients])
    deliveries = [
        _delivery_prepare(invoice=invoice, address=r.address, normalized=r.normalized)
        for r in recipients
    ]
    _enqueue(deliveries)
    return deliveries


@transaction.atomic
def invoice_send_test(*, invoice: Invoice, user: User) -> Delivery:
    """The same email to the member: never changes the invoice, never touches suppression."""
    if not invoice.lines.exists():
        raise InvoiceError(_("Add at least one line before sending the invoice."))
    delivery = _delivery_prepare(
        invoice=invoice,
        address=user.email,
        normalized=normalize_address(user.email),
        is_test=True,
    )
    _enqueue([delivery])
    return delivery


# Deliveries per send task in a bulk send: each task sends its share over one SMTP
# connection, and a chunk this size keeps a task to well under a minute.
SEND_CHUNK = 500


@dataclass
class BulkSendResult:
    """What a bulk send did: the deliveries written, and the invoices it refused and why."""

    deliveries: list[Delivery]
    refused: dict[int, str]  # invoice id -> the message `invoice_send` would have raised


def _enqueue_chunks(deliveries: Sequence[Delivery]) -> int:
    """Queue the queued deliveries in tasks of SEND_CHUNK ids after commit; how many tasks."""
    from invoicing.tasks import deliveries_send_task

    ids = [d.pk for d in deliveries if d.status == S.QUEUED]
    chunks = [ids[i : i + SEND_CHUNK] for i in range(0, len(ids), SEND_CHUNK)]
    for chunk in chunks:
        # Default-argument binding: each callback must keep its own chunk.
        transaction.on_commit(lambda chunk=chunk: deliveries_send_task.delay(chunk))
    return len(chunks)


def _recipients_by_client(client_ids: set[int]) -> dict[int, list[ContactAddress]]:
    """`invoice_recipients` for many clients in one query, in the same order and dedup."""
    by_client: dict[int, list[ContactAddress]] = {}
    seen: set[tuple[int, str]] = set()
    addresses = (
        ContactAddress.objects.filter(contact__client_id__in=client_ids, receives_invoices=True)
        .annotate(client_pk=F("contact__client_id"))
        .order_by("contact__client_id", "contact__name", "-is_primary", "pk")
    )
    for address in addresses:
        key = (address.client_pk, address.normalized)
        if key not in seen:
            seen.add(key)
            by_client.setdefault(address.client_pk, []).append(address)
    return by_client


@transaction.atomic
def invoices_send_bulk(*, invoices: Sequence[Invoice]) -> BulkSendResult:
    """Send many invoices at once ("Send all selected"): what `invoice_send` does for each,
    with a fixed number of queries for the whole set, and the deliveries queued in tasks of
    SEND_CHUNK so each task sends over one SMTP connection.

    One email per recipient with its own Pay Now link, as for a single send. An invoice that
    cannot be sent (void, paid, no lines, no address) is left out and reported in
    ``refused``; the others go.
    """
    if not invoices:
        return BulkSendResult([], {})
    pks = [invoice.pk for invoice in invoices]
    # Read again with client, firm and status as they are now; the caller's objects may be old.
    # Locked, in one order for every sender: a second "Send all drafts" (a double click, a
    # colleague) waits here for the first, then finds its deliveries in flight below.
    current = {
        i.pk: i
        for i in Invoice.objects.select_for_update(of=("self",))
        .select_related("client", "firm")
        .filter(pk__in=pks)
        .order_by("pk")
    }
    busy = _in_flight(list(current))
    with_lines = set(
        InvoiceLine.objects.filter(invoice_id__in=pks).values_list("invoice_id", flat=True)
    )
    recipients = _recipients_by_client({i.client_id for i in current.values()})
    refused: dict[int, str] = {}
    sendable: list[tuple[Invoice, list[ContactAddress]]] = []
    for pk in dict.fromkeys(pks):
        invoice = current.get(pk)
        if invoice is None:
            continue
        if invoice.status in (Invoice.Status.VOID, Invoice.Status.PAID):
            refused[pk] = _("A void or paid invoice cannot be sent.")
        elif pk not in with_lines:
            refused[pk] = _("Add at least one line before sending the invoice.")
        elif not recipients.get(invoice.client_id):
            refused[pk] = _(
                "%(client)s has no email address that receives invoices. Add one on the "
                "client's Contacts tab, then send again."
            ) % {"client": invoice.client.display_name}
        else:
            to = [r for r in recipients[invoice.client_id] if (pk, r.normalized) not in busy]
            if to:
                sendable.append((invoice, to))
            else:
                refused[pk] = _already_sending()

    renamed = [
        i
        for i, _r in sendable
        if i.status == Invoice.Status.DRAFT and i.client_name != i.client.display_name
    ]
    for invoice in renamed:
        invoice.client_name = invoice.client.display_name
    if renamed:
        Invoice.objects.bulk_update(renamed, ["client_name"], batch_size=500)

    # A resend renews the links (as `_revoke_links`): read the candidates coarsely, keep the
    # exact (invoice, address) pairs, revoke those in one UPDATE. Drafts have none.
    wanted = {(i.pk, r.normalized) for i, rs in sendable for r in rs}
    stale = [
        link_pk
        for link_pk, invoice_id, normalized in PayLink.objects.filter(
            invoice_id__in=[i.pk for i, _r in sendable],
            revoked_at=None,
            delivery__is_test=False,
        ).values_list("pk", "invoice_id", "delivery__normalized")
        if (invoice_id, normalized) in wanted
    ]
    if stale:
        PayLink.objects.filter(pk__in=stale).update(revoked_at=timezone.now())

    domain = platform_domain()
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                firm_id=invoice.firm_id,
                invoice=invoice,
                client_id=invoice.client_id,
                address=r.address,
                normalized=r.normalized,
                verp_token=new_verp_token(),
                message_id=_message_id(domain),
            )
            for invoice, rs in sendable
            for r in rs
        ],
        batch_size=1000,
    )
    # The same checks as `_delivery_prepare`, with the suppression list read once.
    suppressions = active_suppressions(pairs=((d.firm_id, d.normalized) for d in deliveries))
    for delivery in deliveries:
        try:
            validate_address(delivery.address)
        except AddressError as exc:
            _record_invalid(delivery, exc)
            continue
        suppression = suppressions.get((delivery.firm_id, delivery.normalized))
        if suppression is not None:
            _record_suppressed(delivery, suppression)
    _enqueue_chunks(deliveries)
    return BulkSendResult(deliveries, refused)


def address_problems_lift(*, client: Client, normalized: str) -> int:
    """The old address was fixed: its deliveries to this client stop showing as problems."""
    return (
        Delivery.objects.filter(client=client, normalized=normalized)
        .exclude(problem_code="")
        .update(problem_code="")
    )


@transaction.atomic
def delivery_resend(*, delivery: Delivery) -> list[Delivery]:
    """Send the invoice again to this recipient, or to the address that replaced it.

    When the member corrected the address on the contact, the old one is gone from the
    client: the resend goes to the client's invoice addresses this invoice has not reached
    yet, and the old address's problems are lifted.
    """
    invoice = delivery.invoice
    # Locked as `invoice_send` locks it: a resend and a send (or a soft retry) of the same
    # invoice queue one after the other, and the second sees the first's deliveries.
    invoice.status = (
        Invoice.objects.select_for_update().values_list("status", flat=True).get(pk=invoice.pk)
    )
    if invoice.status in (Invoice.Status.VOID, Invoice.Status.PAID):
        raise InvoiceError(_("A void or paid invoice cannot be sent."))
    if delivery.is_test:
        raise InvoiceError(_("A test email cannot be resent; send a new test instead."))
    recipients = invoice_recipients(invoice=invoice)
    same = [r for r in recipients if r.normalized == delivery.normalized]
    if same:
        targets = same
    else:
        reached = set(
            Delivery.objects.filter(invoice=invoice, is_test=False).values_list(
                "normalized", flat=True
            )
        )
        targets = [r for r in recipients if r.normalized not in reached]
        if not targets:
            raise InvoiceError(
                _(
                    "%(address)s is no longer an invoice address of this client and there is "
                    "no new address to send to. Correct the address on the Contacts tab first."
                )
                % {"address": delivery.address}
            )
        if not ContactAddress.objects.filter(
            contact__client_id=invoice.client_id, normalized=delivery.normalized
        ).exists():
            address_problems_lift(client=invoice.client, normalized=delivery.normalized)
    busy = _in_flight([invoice.pk])
    targets = [t for t in targets if (invoice.pk, t.normalized) not in busy]
    if not targets:
        raise InvoiceError(
            _("This invoice is already on its way to this address. Its progress is shown below.")
        )
    PayLink.objects.filter(delivery=delivery, revoked_at=None).update(revoked_at=timezone.now())
    _revoke_links(invoice=invoice, normalized=[t.normalized for t in targets])
    deliveries = [
        _delivery_prepare(invoice=invoice, address=t.address, normalized=t.normalized)
        for t in targets
    ]
    _enqueue(deliveries)
    return deliveries


def _as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _record_refusal(
    delivery: Delivery, code: int, text: bytes | str, command: str, *, locked: bool = False
) -> None:
    diagnostic = _as_text(text)
    found = _ENHANCED_STATUS.match(diagnostic)
    status = found.group(1) if found else ""
    outcome = classify_reply(str(code), status, diagnostic, command=command)
    delivery_event_record(
        delivery=delivery,
        locked=locked,
        kind=outcome.kind,
        source="smtp",
        reply_code=str(code),
        status_code=status,
        reason=outcome.reason,
        diagnostic=f"{code} {diagnostic}".strip(),
        problem_code=outcome.problem_code,
    )
    if outcome.kind == S.SOFT_BOUNCED and not delivery.is_test:
        _soft_retry_schedule(delivery)


# A server that refuses for now (4.x.x) at send time gets the email again later, as an MTA
# would retry its queue (settings.DELIVERY_SOFT_RETRY_MINUTES, by default after 15 minutes,
# 1 hour and 4 hours), each attempt a new delivery on the timeline.
def _soft_retry_schedule(delivery: Delivery) -> None:
    from invoicing.tasks import delivery_soft_retry_task

    attempts = Delivery.objects.filter(
        invoice_id=delivery.invoice_id,
        normalized=delivery.normalized,
        is_test=False,
        status=S.SOFT_BOUNCED,
    ).count()
    delays = settings.DELIVERY_SOFT_RETRY_MINUTES
    if attempts > len(delays):
        return  # given up: the problem stays shown, and repeated failures block the address
    countdown = delays[attempts - 1] * 60
    delivery_id = delivery.pk
    transaction.on_commit(
        lambda: delivery_soft_retry_task.apply_async(args=[delivery_id], countdown=countdown)
    )


@transaction.atomic
def delivery_soft_retry(*, delivery_id: int) -> list[Delivery]:
    """Send again after a temporary refusal, unless something newer already happened.

    The broker may hand the same retry to two workers (a countdown longer than its
    visibility timeout, a redelivery): the delivery's row lock orders them, and the second
    finds the delivery the first queued and does nothing.
    """
    delivery = (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("invoice")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None or delivery.status != S.SOFT_BOUNCED:
        return []
    newer = Delivery.objects.filter(
        invoice_id=delivery.invoice_id, normalized=delivery.normalized, pk__gt=delivery.pk
    )
    if newer.exists() or delivery.invoice.status in (Invoice.Status.VOID, Invoice.Status.PAID):
        return []
    try:
        with transaction.atomic():
            return delivery_resend(delivery=delivery)
    except InvoiceError:
        return []  # the address left the client meanwhile, or a send is in flight


# --- the sender: claim a group, send it, record it --------------------------------------
#
# Each group of a send task goes through three steps (a transactional outbox):
#
# 1. Claim, in one transaction: lock the group's queued deliveries (`SKIP LOCKED`, so two
#    workers never take the same one), store every Pay Now link (its hash exists before
#    the email leaves, so a link in a client's inbox always works), and move them to
#    "sending" with the claim's time. Commit.
# 2. Send over the task's one SMTP connection, outside any transaction, keeping each
#    recipient's outcome in memory. The next email is built while the server handles the
#    current one: in this thread between writing a pipelined message and reading its reply
#    (`invoicing.smtp_pipelining`), or else in a thread while this one waits on replies.
# 3. Record, in one transaction: the events in one INSERT, the accepted deliveries in one
#    UPDATE, the invoices they made "sent" in another; refusals (few) one by one, because
#    the suppression rules and retries read each of them.
#
# The trade-off: a worker that dies between 1 and 3 leaves its group in "sending", and
# nobody knows which of those emails left. Sending them again could give a client the same
# invoice twice; forgetting them could mean it never arrived. Neither is done on a guess:
# once a claim is older than SENDING_LEASE, `deliveries_sending_expire` (a periodic task)
# marks those deliveries "outcome unknown", an event and a problem on the timeline that
# says the email went at most once and offers Resend. A crash used to cost at most the one
# email in flight; now it can cost a group (SEND_GROUP emails) of "please check", in
# exchange for a handful of statements per group instead of about seven per email.
# Failures the sender sees itself (a refusal, a lost connection, a bug raising in the
# middle) are recorded exactly, never as unknown, except the one email in flight when an
# unexpected error hit.
# Through an ESP, a delivery learns the ESP's message id only at step 3, so the ESP's
# webhooks about a group's emails can come before it: they wait for their delivery (see
# `invoicing.webhook_processing`), and step 3 has them matched once it stored the ids.

# Big enough that the two transactions cost little per email (0.1 statements each), small
# enough that a crash leaves few emails to check.
SEND_GROUP = 200
# The default of settings.DELIVERY_SENDING_LEASE_SECONDS, read through `sending_lease()`.
SENDING_LEASE = timedelta(minutes=30)


def sending_lease() -> timedelta:
    """How long a claim lives without renewal (settings.DELIVERY_SENDING_LEASE_SECONDS, 30
    minutes by default). The sender renews it every DELIVERY_SENDING_LEASE_RENEW_SECONDS
    while it works, so only a sender that stopped (or hangs longer than the lease on one
    email) is declared dead; it then records nothing over what replaced its claim."""
    return timedelta(seconds=settings.DELIVERY_SENDING_LEASE_SECONDS)


# Emails built ahead of the one being sent.
BUILD_AHEAD = 2
OUTCOME_UNKNOWN = "delivery.outcome_unknown"
_UNKNOWN_DIAGNOSTIC = gettext_noop(
    "Sending was interrupted before the server's answer was recorded. The email was sent at "
    "most once: check with the client whether it arrived, or resend it."
)


class _Result(Enum):
    ACCEPTED = "accepted"  # a server took it for this recipient
    REFUSED = "refused"  # an SMTP refusal: code, text and the command refused
    ESP_REFUSED = "esp_refused"  # anymail's per-recipient status said rejected or invalid
    BUILD_FAILED = "build_failed"  # the email could not be built: nothing left
    IN_FLIGHT = "in_flight"  # handed to the connection, no answer yet
    NOT_SENT = "not_sent"  # not taken by the server, for a reason worth a later retry
    CONNECTION_LOST = "connection_lost"  # as NOT_SENT, and the rest of the task waits too
    # The ESP's API gave no clear answer (a read timeout, a gateway timeout): it may have
    # taken the email. Recorded as "outcome unknown", never retried on a guess.
    AMBIGUOUS = "ambiguous"


@dataclass
class _Outcome:
    result: _Result
    at: datetime
    esp_message_id: str = ""
    code: int = 0
    text: str = ""
    command: str = ""


@dataclass
class _Group:
    """Deliveries claimed together, with what building their emails needs."""

    deliveries: list[Delivery]  # claimed: now "sending", in the task's order
    tokens: dict[int, str]  # delivery id -> Pay Now token (stored only hashed)
    lines: dict[int, list[InvoiceLine]]  # invoice id -> its lines
    lease: str = ""  # the claim's token, on every claimed row while the claim is held
    renewed: float = 0.0  # time.monotonic() of the last renewal
    lost: set[int] = field(default_factory=set)  # deliveries whose lease ran out meanwhile

    def renew(self, *, force: bool = False) -> None:
        """Extend the claim of the deliveries not sent yet, at most every
        DELIVERY_SENDING_LEASE_RENEW_SECONDS; those the watchdog took meanwhile are lost:
        not sent, and not recorded over what replaced them."""
        if not self.deliveries or not self.lease:
            return
        now = time.monotonic()
        if not force and now - self.renewed < settings.DELIVERY_SENDING_LEASE_RENEW_SECONDS:
            return
        self.renewed = now
        ids = [d.pk for d in self.deliveries if d.pk not in self.lost]
        # Autocommit, one statement: visible to the watchdog at once.
        held = set(
            Delivery.objects.filter(pk__in=ids, status=S.SENDING, lease_token=self.lease)
            .order_by()
            .values_list("pk", flat=True)
        )
        Delivery.objects.filter(pk__in=held, lease_token=self.lease).update(
            claimed_at=timezone.now()
        )
        gone = set(ids) - held
        if gone:
            logger.warning("Sending lease lost for deliveries %s: not sent by this worker", gone)
            self.lost |= gone


def deliveries_send(*, delivery_ids: Sequence[int]) -> list[int]:
    """Send queued deliveries over one connection; return the ids to retry later.

    Only deliveries still queued are claimed, so a retried or duplicated task never sends
    again what was claimed before. Deliveries not sent (the server unreachable, the
    connection lost) are queued again and returned.
    """
    ids = list(dict.fromkeys(delivery_ids))
    connection = get_connection()
    # Django's own SMTP backend only re-parses the addresses and re-serialises the email
    # before calling smtplib: the builder writes the same envelope and bytes itself, and
    # they go straight to the connection the backend opened. Any other backend (an ESP's
    # through anymail, a subclass) gets the EmailMessage through `send_messages`.
    direct = type(connection) is SMTPBackend
    try:
        connection.open()
        pipelined = direct and smtp_pipelining.offered(connection.connection)
    except (smtplib.SMTPException, OSError):
        connection.close()
        return ids  # the server is unreachable: nothing was claimed, sent or recorded
    builder = InvoiceEmailBuilder(verp=isinstance(connection, SMTPBackend))
    # To a server that pipelines, each email is built in this thread while the server
    # reads the previous one (`smtp_pipelining.sendmail` calls `_Later.run` between writing
    # a message and reading its reply): the build overlaps the server's work with no
    # second thread to hand the GIL to and from. Otherwise a thread builds ahead while this
    # one waits on each reply (four per email without pipelining; an ESP's HTTP request).
    # One email (the Send button on a one-address client) has nothing to overlap with.
    pool: ThreadPoolExecutor | None = None
    submit: Callable[..., Any] = _Later
    if not pipelined and len(ids) > 1:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invoice-email")
        submit = pool.submit
    retry: list[int] = []
    try:
        for first in range(0, len(ids), SEND_GROUP):
            group = _group_claim(ids[first : first + SEND_GROUP])
            outcomes: dict[int, _Outcome] = {}
            try:
                broken = _group_send(group, connection, builder, submit, outcomes, direct)
            except Exception:
                # A bug or an unforeseen failure: record what is known (the email in flight
                # becomes "outcome unknown"), and hand back the rest, never claimed or
                # queued again, so that the task's retries send them or finally fail them:
                # nothing is left "queued" with no task to send it.
                logger.exception("Sending stopped on an unexpected error")
                retry.extend(_group_record(group, outcomes, interrupted=True))
                retry.extend(ids[first + SEND_GROUP :])
                break
            except BaseException:
                # The worker is being stopped: record what is known, the rest stays queued.
                _group_record(group, outcomes, interrupted=True)
                raise
            retry.extend(_group_record(group, outcomes))
            if broken:
                retry.extend(ids[first + SEND_GROUP :])  # still queued, never claimed
                break
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        connection.close()
    return retry


class _Later:
    """A build done in the sending thread: when ``run`` is called (while the server handles
    the previous email), or else when its result is asked for. Like a `Future`, ``result``
    raises what the build raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._call: Callable[[], Any] | None = lambda: fn(*args)
        self._value: Any = None
        self._error: Exception | None = None

    def run(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            try:
                self._value = call()
            except Exception as exc:  # kept for `result`, as a Future keeps it
                self._error = exc

    def result(self) -> Any:
        self.run()
        if self._error is not None:
            raise self._error
        return self._value


def _group_claim(ids: Sequence[int]) -> _Group:
    """Step 1: claim the queued ones among ``ids``, store their links, mark them sending."""
    order = {pk: position for position, pk in enumerate(ids)}
    with transaction.atomic():
        claimed = sorted(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=list(ids), status=S.QUEUED)
            # The firm's billing details too: the email's frame shows them, and it is built
            # in a thread that must not query.
            .select_related("invoice__firm__billing_settings", "invoice__client"),
            key=lambda d: order[d.pk],
        )
        # The invoices as they are now, locked against a void or a payment until this claim
        # commits: an email queued before the invoice was voided or paid is not sent.
        statuses = dict(
            Invoice.objects.select_for_update(no_key=True)
            .filter(pk__in={d.invoice_id for d in claimed})
            .order_by("pk")
            .values_list("pk", "status")
        )
        kept = []
        for delivery in claimed:
            status = statuses.get(delivery.invoice_id, delivery.invoice.status)
            delivery.invoice.status = status
            if status == Invoice.Status.VOID or (
                status == Invoice.Status.PAID and not delivery.is_test
            ):
                _record_cancelled(delivery, status)
            else:
                kept.append(delivery)
        claimed = kept
        # Checked again at send time: the address may have been blocked since it was queued.
        suppressions = active_suppressions(
            pairs=((d.firm_id, d.normalized) for d in claimed if not d.is_test)
        )
        deliveries = []
        for delivery in claimed:
            suppression = None
            if not delivery.is_test:
                suppression = suppressions.get((delivery.firm_id, delivery.normalized))
            if suppression is not None:
                _record_suppressed(delivery, suppression, locked=True)
            else:
                deliveries.append(delivery)
        if not deliveries:
            return _Group([], {}, {})
        lines: dict[int, list[InvoiceLine]] = {}
        for line in InvoiceLine.objects.filter(invoice_id__in={d.invoice_id for d in deliveries}):
            lines.setdefault(line.invoice_id, []).append(line)
        now = timezone.now()
        tokens = {d.pk: secrets.token_urlsafe(32) for d in deliveries}  # 256 bits each
        expires = now + timedelta(days=settings.PAY_LINK_DAYS)
        # A queued delivery normally has no link; one left by an attempt that never sent
        # (connection lost) is replaced in the same statement.
        PayLink.objects.bulk_create(
            [
                PayLink(
                    delivery=d,
                    invoice_id=d.invoice_id,
                    token_hash=pay_token_hash(tokens[d.pk]),
                    expires_at=expires,
                )
                for d in deliveries
            ],
            update_conflicts=True,
            unique_fields=["delivery"],
            update_fields=["invoice", "token_hash", "expires_at", "revoked_at"],
        )
        lease = secrets.token_hex(16)
        Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
            status=S.SENDING, claimed_at=now, updated=now, lease_token=lease
        )
        for delivery in deliveries:
            delivery.status, delivery.claimed_at, delivery.lease_token = S.SENDING, now, lease
    return _Group(deliveries, tokens, lines, lease=lease, renewed=time.monotonic())


def _record_cancelled(delivery: Delivery, invoice_status: str) -> None:
    """A queued email of an invoice voided or paid since: not sent, and said so."""
    void = invoice_status == Invoice.Status.VOID
    delivery_event_record(
        delivery=delivery,
        locked=True,
        kind=S.CANCELLED,
        source="portal",
        reason="invoice_void" if void else "invoice_paid",
        diagnostic=(
            _("Not sent: the invoice was voided after this email was queued.")
            if void
            else _("Not sent: the invoice was paid after this email was queued.")
        ),
        problem_code="",
    )


def _group_send(
    group: _Group,
    connection: Any,
    builder: InvoiceEmailBuilder,
    submit: Callable[..., Future[Any] | _Later],
    outcomes: dict[int, _Outcome],
    direct: bool = False,
) -> bool:
    """Step 2: send each claimed delivery's email; True when the connection was lost.

    ``outcomes`` is filled as it goes, so a caller that catches an exception still knows
    what happened to each delivery so far. The only database access here is the lease
    renewal, in this thread, between emails; none in the building thread.
    """

    def build(delivery: Delivery) -> PreparedEmail | Envelope:
        invoice = delivery.invoice
        message = builder.build(
            delivery=delivery,
            invoice=invoice,
            pay_token=group.tokens[delivery.pk],
            lines=group.lines.get(invoice.pk, []),
        )
        return builder.envelope(message) if direct else message.prepare()

    def build_next() -> None:  # while the server handles the email just written
        if building and isinstance(building[0][1], _Later):
            building[0][1].run()

    waiting = iter(group.deliveries)
    building: deque[tuple[Delivery, Future[PreparedEmail | Envelope] | _Later]] = deque(
        (d, submit(build, d)) for d in islice(waiting, BUILD_AHEAD + 1)
    )
    while building:
        group.renew()  # every few seconds at most: one UPDATE for the whole group
        delivery, built = building.popleft()
        if delivery.pk in group.lost:
            # The watchdog gave up on this claim (and the owner may have resent): not ours
            # to send any more. Its prebuilt email is dropped.
            following = next(waiting, None)
            if following is not None:
                building.append((following, submit(build, following)))
            continue
        following = next(waiting, None)
        if following is not None:
            building.append((following, submit(build, following)))
        try:
            message = built.result()
        except Exception as exc:  # a bug or bad data in one invoice: that email only
            logger.exception("invoice email for delivery %s could not be built", delivery.pk)
            outcomes[delivery.pk] = _Outcome(_Result.BUILD_FAILED, timezone.now(), text=str(exc))
            continue
        outcomes[delivery.pk] = _Outcome(_Result.IN_FLIGHT, timezone.now())
        outcomes[delivery.pk] = outcome = _send_one(connection, delivery, message, build_next)
        if outcome.result == _Result.CONNECTION_LOST:
            return True  # this one and the rest are queued again for a retry
    return False


def _send_one(
    connection: Any,
    delivery: Delivery,
    message: PreparedEmail | Envelope,
    while_waiting: Callable[[], None] | None = None,
) -> _Outcome:
    """Hand one email to the connection and say what became of it. An `Envelope` goes to
    the smtplib connection of Django's SMTP backend as the backend would send it."""
    try:
        if isinstance(message, Envelope):
            # Pipelined when the server offers it: two round trips per email, not four.
            smtp_pipelining.sendmail(
                connection.connection,
                message.sender,
                message.recipients,
                message.data,
                while_waiting,
            )
        else:
            connection.send_messages([message])
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return _Outcome(
            _Result.REFUSED, timezone.now(), code=code, text=_as_text(text), command="RCPT"
        )
    except smtplib.SMTPSenderRefused as exc:
        return _Outcome(
            _Result.REFUSED,
            timezone.now(),
            code=exc.smtp_code,
            text=_as_text(exc.smtp_error),
            command="MAIL",
        )
    except smtplib.SMTPDataError as exc:
        return _Outcome(
            _Result.REFUSED,
            timezone.now(),
            code=exc.smtp_code,
            text=_as_text(exc.smtp_error),
            command="DATA",
        )
    except AnymailRecipientsRefused:
        pass  # anymail_status on the message says which and why; read below
    except AnymailError as exc:
        # Before OSError: anymail's errors from `requests` are OSErrors too.
        if _esp_may_have_accepted(exc):
            return _Outcome(_Result.AMBIGUOUS, timezone.now(), text=str(exc)[:500])
        return _Outcome(_Result.NOT_SENT, timezone.now())  # this one is retried later
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        # No reply to our message, so the server took no responsibility for it (RFC 5321
        # 6.1): an MTA sends again in this case, and so do we.
        return _Outcome(_Result.CONNECTION_LOST, timezone.now(), text=str(exc))
    except smtplib.SMTPException:
        return _Outcome(_Result.NOT_SENT, timezone.now())  # this one is retried later
    return _esp_outcome(delivery, message)


def _esp_may_have_accepted(exc: AnymailError) -> bool:
    """Whether the ESP may have taken the email although the call failed: the request went
    out and no verdict came back (the read timed out, a gateway timed out, or a success
    status came with a body we could not read). A refused connection or a 4xx/5xx verdict
    means it was not taken."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    status = getattr(exc, "status_code", None)
    return status == 504 or (status is not None and 200 <= status < 300)


def _esp_outcome(delivery: Delivery, message: object) -> _Outcome:
    """Read anymail's per-recipient answer (none with plain SMTP: accepted)."""
    now = timezone.now()
    status = getattr(message, "anymail_status", None)
    recipient = None
    if status is not None and status.recipients:
        recipient = status.recipients.get(delivery.address) or next(
            iter(status.recipients.values())
        )
    raw_id = recipient.message_id if recipient is not None else None
    message_id = "" if raw_id is None else str(raw_id)[:255]
    if recipient is not None and recipient.status in ("rejected", "invalid"):
        return _Outcome(_Result.ESP_REFUSED, now, esp_message_id=message_id, text=recipient.status)
    return _Outcome(_Result.ACCEPTED, now, esp_message_id=message_id)


def _group_record(
    group: _Group, outcomes: dict[int, _Outcome], *, interrupted: bool = False
) -> list[int]:
    """Step 3: record every claimed delivery's outcome in one transaction; the ids to retry.

    A delivery with no outcome was never handed to the connection: queued again. One in
    flight when an unexpected error hit (``interrupted``) may or may not have left: unknown.
    Statuses move only from "sending" (or "unknown", when a slow sender records after the
    watchdog gave up on it): a webhook that already said "delivered" is not undone. A
    delivery whose lease this sender lost is never queued again nor marked unknown again:
    only what a server answered about it (accepted, refused) is recorded, as the facts they
    are.
    """
    by_result: dict[_Result, list[tuple[Delivery, _Outcome]]] = {}
    for delivery in group.deliveries:
        outcome = outcomes.get(delivery.pk)
        if (
            outcome is None
            or outcome.result == _Result.CONNECTION_LOST
            or (outcome.result == _Result.IN_FLIGHT and not interrupted)
        ):
            outcome = _Outcome(_Result.NOT_SENT, timezone.now())
        by_result.setdefault(outcome.result, []).append((delivery, outcome))
    if not by_result:
        return []
    pending = (S.SENDING, S.UNKNOWN)
    now = timezone.now()
    with transaction.atomic():
        accepted = by_result.get(_Result.ACCEPTED, [])
        if accepted:
            DeliveryEvent.objects.bulk_create(
                DeliveryEvent(delivery=d, kind=S.SENT, source="smtp", occurred_at=o.at)
                for d, o in accepted
            )
            Delivery.objects.filter(pk__in=[d.pk for d, _o in accepted], status__in=pending).update(
                status=S.SENT, problem_code="", updated=now, lease_token=""
            )
            with_ids = [d for d, o in accepted if o.esp_message_id]
            for delivery, outcome in accepted:
                delivery.esp_message_id = outcome.esp_message_id or delivery.esp_message_id
            if with_ids:
                Delivery.objects.bulk_update(with_ids, ["esp_message_id"], batch_size=500)
            # Sent only once a server accepted it for at least one recipient.
            sent_invoices = {d.invoice_id for d, _o in accepted if not d.is_test}
            if sent_invoices:
                Invoice.objects.filter(pk__in=sent_invoices, status=Invoice.Status.DRAFT).update(
                    status=Invoice.Status.SENT, sent_at=now
                )
        # Refusals are few, and each one feeds the suppression rules and the soft retries:
        # recorded one by one, against the rows locked here.
        one_by_one = [
            pair
            for result in (_Result.REFUSED, _Result.ESP_REFUSED, _Result.BUILD_FAILED)
            for pair in by_result.get(result, [])
        ]
        if one_by_one:
            current = dict(
                Delivery.objects.select_for_update()
                .filter(pk__in=[d.pk for d, _o in one_by_one])
                .values_list("pk", "status")
            )
            for delivery, outcome in one_by_one:
                delivery.status = current.get(delivery.pk, delivery.status)
                _record_refused(delivery, outcome)
        unknown = [
            d
            for result in (_Result.IN_FLIGHT, _Result.AMBIGUOUS)
            for d, _o in by_result.get(result, [])
        ]
        if unknown:
            _record_unknown(unknown, now=now, lease=group.lease)
        not_sent = [d.pk for d, _o in by_result.get(_Result.NOT_SENT, [])]
        if not_sent:
            # Only rows this claim still holds: one the watchdog marked "outcome unknown"
            # (and the owner maybe resent) must never go back to the queue.
            not_sent = list(
                Delivery.objects.select_for_update()
                .filter(pk__in=not_sent, status=S.SENDING, lease_token=group.lease)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
        if not_sent:
            # Their links never left: drop them; the next claim stores new ones.
            PayLink.objects.filter(delivery_id__in=not_sent).delete()
            Delivery.objects.filter(pk__in=not_sent).update(
                status=S.QUEUED, problem_code="", updated=now, lease_token=""
            )
    esp_results = by_result.get(_Result.ACCEPTED, []) + by_result.get(_Result.ESP_REFUSED, [])
    if any(o.esp_message_id for _d, o in esp_results):
        _waiting_webhook_events_match()
    return not_sent


def _waiting_webhook_events_match() -> None:
    """An ESP can report "delivered" within a second, before this group was recorded: such
    events wait for their delivery (`invoicing.webhook_processing`). Now that the message ids
    are stored, match them at once instead of at the next sweep."""
    from invoicing.tasks_events import webhook_events_waiting_kick
    from invoicing.webhook_processing import webhook_events_waiting_exist

    if webhook_events_waiting_exist():
        transaction.on_commit(webhook_events_waiting_kick)


def _record_refused(delivery: Delivery, outcome: _Outcome) -> None:
    if outcome.result == _Result.REFUSED:
        _record_refusal(delivery, outcome.code, outcome.text, outcome.command, locked=True)
    elif outcome.result == _Result.ESP_REFUSED:
        if outcome.esp_message_id:
            Delivery.objects.filter(pk=delivery.pk).update(esp_message_id=outcome.esp_message_id)
        invalid = outcome.text == "invalid"
        delivery_event_record(
            delivery=delivery,
            locked=True,
            kind=S.BOUNCED if invalid else S.REJECTED,
            source="webhook",
            occurred_at=outcome.at,
            reason=outcome.text,
            diagnostic=_("The email service refused this recipient (%(status)s).")
            % {"status": outcome.text},
            problem_code="delivery.invalid_address" if invalid else "delivery.rejected_policy",
        )
    else:  # BUILD_FAILED: nothing left; say so, as for an address refused before sending
        delivery_event_record(
            delivery=delivery,
            locked=True,
            kind=S.FAILED,
            source="portal",
            occurred_at=outcome.at,
            reason="build_failed",
            diagnostic=outcome.text,
            problem_code="delivery.not_sent_rejected_document",
        )


def _record_unknown(
    deliveries: Sequence[Delivery], *, now: datetime, lease: str | None = None
) -> None:
    """The sender lost track of these after claiming them: say so, never guess. With
    ``lease``, only those that claim still holds (the watchdog may have said so already)."""
    held = Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=S.SENDING)
    if lease is not None:
        held = held.filter(lease_token=lease)
    ids = set(held.order_by().values_list("pk", flat=True))
    deliveries = [d for d in deliveries if d.pk in ids]
    if not deliveries:
        return
    DeliveryEvent.objects.bulk_create(
        DeliveryEvent(
            delivery=d,
            kind=S.UNKNOWN,
            source="portal",
            occurred_at=now,
            reason="sender_interrupted",
            diagnostic=_(_UNKNOWN_DIAGNOSTIC),
        )
        for d in deliveries
    )
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=S.SENDING).update(
        status=S.UNKNOWN, problem_code=OUTCOME_UNKNOWN, updated=now, lease_token=""
    )


# Longer than a send task's own retries (1 + 2 + 4 + 8 + 16 minutes of backoff).
QUEUED_STALE = timedelta(hours=1)


def deliveries_queued_stale(*, now: datetime | None = None, limit: int = 5000) -> list[int]:
    """Queued deliveries that no send task has touched for an hour: their task was lost (a
    broker that forgot its messages, a worker lost with the task). Returns their ids, marked
    as picked up now so that the next sweep leaves them to the task it is about to queue.
    Sending them twice cannot happen: a task only claims deliveries still queued."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=S.QUEUED, updated__lt=now - QUEUED_STALE)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        Delivery.objects.filter(pk__in=ids).update(updated=now)
    return ids


def deliveries_sending_expire(*, now: datetime | None = None) -> int:
    """Deliveries whose sender died between claim and record: outcome unknown, shown as a
    problem to act on, neither sent again nor left "sending" forever. Returns how many."""
    now = now or timezone.now()
    with transaction.atomic():
        stuck = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=S.SENDING, claimed_at__lt=now - sending_lease())
            .order_by("claimed_at")[:1000]
        )
        if stuck:
            _record_unknown(stuck, now=now)
    return len(stuck)


def deliveries_fail(*, delivery_ids: Sequence[int], diagnostic: str) -> None:
    """Give up on deliveries the server never took, after the task's retries.

    Only those still queued, read under their row locks: one a stale-queue sweep's task
    claimed (and maybe sent) meanwhile is not marked failed over its real outcome.
    """
    with transaction.atomic():
        queued = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(pk__in=list(delivery_ids), status=S.QUEUED)
            .order_by("pk")
        )
        for delivery in queued:
            _fail_queued(delivery, diagnostic)


def _fail_queued(delivery: Delivery, diagnostic: str) -> None:
    delivery_event_record(
        delivery=delivery,
        locked=True,
        kind=S.FAILED,
        source="portal",
        diagnostic=diagnostic,
        problem_code="delivery.not_sent_rejected_document",
    )


# --- Pay Now links ----------------------------------------------------------------------


def pay_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pay_link_create(*, delivery: Delivery) -> str:
    """A fresh link for this delivery; returns the token, which is stored only hashed."""
    token = secrets.token_urlsafe(32)  # 256 bits
    PayLink.objects.update_or_create(
        delivery=delivery,
        defaults={
            "invoice_id": delivery.invoice_id,
            "token_hash": pay_token_hash(token),
            "expires_at": timezone.now() + timedelta(days=settings.PAY_LINK_DAYS),
            "revoked_at": None,
        },
    )
    return token


def pay_link_find(*, token: str) -> PayLink | None:
    if not token or len(token) > 128:
        return None
    return (
        PayLink.objects.select_related("invoice__firm", "invoice__client", "delivery")
        .filter(token_hash=pay_token_hash(token))
        .first()
    )


def pay_link_viewed(*, link: PayLink) -> None:
    """The client opened the page: remember when, and move a sent invoice to viewed."""
    now = timezone.now()
    first_view = link.last_viewed_at is None
    PayLink.objects.filter(pk=link.pk).update(last_viewed_at=now)
    link.last_viewed_at = now
    invoice = link.invoice
    if invoice.status == Invoice.Status.SENT:
        Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.SENT).update(
            status=Invoice.Status.VIEWED
        )
        invoice.status = Invoice.Status.VIEWED
    if first_view and link.delivery is not None and not link.delivery.is_test:
        # Opening the link proves the email arrived, whatever the ESP said about opens.
        delivery_event_record(delivery=link.delivery, kind=S.CLICKED, source="portal")


# --- payments ---------------------------------------------------------------------------


# Payments kept but not counted toward their invoice: the money must go back or elsewhere.
NOT_COUNTED = (Payment.Problem.VOID_INVOICE, Payment.Problem.CURRENCY_MISMATCH)


def invoice_paid_amount(*, invoice: Invoice) -> Decimal:
    """What the client paid toward this invoice, in its currency."""
    return invoice.payments.exclude(problem_code__in=NOT_COUNTED).aggregate(total=Sum("amount"))[
        "total"
    ] or Decimal("0.00")


def invoice_may_have_reached_client(invoice: Invoice) -> bool:
    """Whether an email of this invoice may have left (so the client may have paid it):
    a delivery that got past "queued" other than by being refused before sending."""
    return (
        Delivery.objects.filter(invoice=invoice, is_test=False)
        .exclude(status__in=(S.QUEUED, S.FAILED, S.SUPPRESSED, S.CANCELLED))
        .exists()
    )


def payment_record(
    *,
    invoice: Invoice,
    amount: Decimal,
    provider: str = "offline",
    reference: str = "",
    recorded_by: User | None = None,
    currency: str | None = None,
    submission_key: str = "",
) -> Payment:
    """Record money received; the invoice is paid once payments cover its total.

    A provider's payment (the client paid by card) is always recorded, whatever the
    invoice's state: one still "draft" because its send has no outcome yet becomes sent (or
    paid); one that cannot take it (void, another ``currency``, more than was owed) keeps it
    with a ``problem_code`` the owner sees on the invoice. A payment a member types in is
    refused on a draft nobody may have received, and on a void invoice: that is a mistake
    to correct, not money to keep. ``submission_key`` (one per form shown) makes a double
    submit record one payment.
    """
    online = provider != "offline"
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if amount <= 0:
            raise InvoiceError(_("The amount must be more than zero."))
        if submission_key:
            earlier = Payment.objects.filter(invoice=locked, submission_key=submission_key).first()
            if earlier is not None:
                return earlier  # the same form submitted again (a double click, a reload)
        if not online and (
            locked.status == Invoice.Status.VOID
            or (
                locked.status == Invoice.Status.DRAFT
                and not invoice_may_have_reached_client(locked)
            )
        ):
            raise InvoiceError(_("Payments can only be recorded on a sent invoice."))
        currency = (currency or locked.currency).upper()
        counted = invoice_paid_amount(invoice=locked)
        problem = Payment.Problem.NONE
        if locked.status == Invoice.Status.VOID:
            problem = Payment.Problem.VOID_INVOICE
        elif currency != locked.currency:
            problem = Payment.Problem.CURRENCY_MISMATCH
        elif counted + amount > locked.total:
            problem = Payment.Problem.OVERPAID
        payment = Payment.objects.create(
            invoice=locked,
            provider=provider,
            amount=amount,
            currency=currency,
            reference=reference,
            recorded_by=recorded_by,
            problem_code=problem,
            submission_key=submission_key,
        )
        if problem:
            logger.error(
                "Payment %s of %s %s on invoice %s needs a person: %s",
                payment.pk,
                amount,
                currency,
                locked.pk,
                problem,
            )
        update: list[str] = []
        if locked.status == Invoice.Status.DRAFT:
            # Money for it arrived, so the client has it: it was sent, whatever the sender
            # managed to record.
            locked.status = Invoice.Status.SENT
            locked.sent_at = locked.sent_at or timezone.now()
            update += ["status", "sent_at"]
        became_paid = (
            locked.status in (Invoice.Status.SENT, Invoice.Status.VIEWED)
            and invoice_paid_amount(invoice=locked) >= locked.total
        )
        if became_paid:
            locked.status = Invoice.Status.PAID
            locked.paid_at = timezone.now()
            update += ["status", "paid_at"]
        if update:
            locked.save(update_fields=list(dict.fromkeys(update)))
        if became_paid:
            from invoicing.tasks import invoice_paid_notify_task

            transaction.on_commit(lambda: invoice_paid_notify_task.delay(locked.pk))
    invoice.refresh_from_db()
    return payment


def invoice_paid_notify_once(*, invoice_id: int) -> bool:
    """Tell the owners the invoice was paid, once however often the task runs: the row lock
    orders redelivered runs, and the first marks it told. False when it was told already.

    The mark commits after the email left: a worker killed in between leaves it untold, and
    the task's redelivery tells them (twice only if the kill fell between the server's
    acceptance and the commit)."""
    with transaction.atomic():
        invoice = (
            Invoice.objects.select_for_update(of=("self",))
            .select_related("firm", "client")
            .filter(pk=invoice_id, paid_notified_at=None, status=Invoice.Status.PAID)
            .first()
        )
        if invoice is None:
            return False
        invoice_paid_notify_owners(invoice=invoice)
        Invoice.objects.filter(pk=invoice.pk).update(paid_notified_at=timezone.now())
    return True


def invoice_paid_notify_owners(*, invoice: Invoice) -> None:
    owners = list(
        Membership.objects.filter(firm_id=invoice.firm_id, role=Role.OWNER).values_list(
            "user__email", flat=True
        )
    )
    invoice_paid_notify(invoice=invoice, owners=owners)


# --- firm settings and suppression ------------------------------------------------------


def billing_settings_update(
    *,
    firm: Firm,
    payment_instructions: str,
    currency: str,
    legal_name: str = "",
    address: str = "",
    tax_id: str = "",
    bank_details: str = "",
) -> FirmBillingSettings:
    found, _created = FirmBillingSettings.objects.update_or_create(
        firm=firm,
        defaults={
            "payment_instructions": payment_instructions,
            "currency": currency.upper(),
            "legal_name": legal_name.strip(),
            "address": address.strip(),
            "tax_id": tax_id.strip(),
            "bank_details": bank_details.strip(),
        },
    )
    return found


def suppression_remove(*, suppression: Suppression, removed_by: User, note: str) -> bool:
    """Lift a block after the owner confirmed the address works; the row stays as history."""
    return bool(
        Suppression.objects.filter(pk=suppression.pk, removed_at=None).update(
            removed_at=timezone.now(), removed_by=removed_by, removal_note=note
        )
    )


class SuppressionRemovalLimitReached(InvoiceError):
    """The firm unblocked as many addresses as it may in 24 hours; ``retry_at`` says when
    the next removal is allowed."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


def suppression_remove_audited(
    *,
    suppression: Suppression,
    removed_by: User,
    note: str,
    grant: SupportGrant | None = None,
    method: str = "POST",
    path: str = "",
) -> bool:
    """Lift a block within the firm's daily limit and audit it, all in one transaction.

    settings.SUPPRESSION_REMOVALS_PER_DAY per firm in any 24 hours: mail to dead addresses
    hurts the firm's sending reputation, so a hurried or hijacked session cannot empty the
    list. The firm's row is locked first, so two owners unblocking at the same moment are
    counted one after the other and cannot both slip under the limit. ``grant`` is the support
    access the owner acts under, if any; ``method`` and ``path`` the request, for the audit
    log. Returns False when the block was lifted already; raises
    `SuppressionRemovalLimitReached` (nothing changed) when the limit is reached.
    """
    limit = settings.SUPPRESSION_REMOVALS_PER_DAY
    with transaction.atomic():
        firm = Firm.objects.select_for_update().get(pk=suppression.firm_id)
        now = timezone.now()
        times = suppression_removal_times(firm=firm, since=now - timedelta(days=1))
        if len(times) >= limit:
            # The next removal is allowed once the oldest counted one is a day old.
            oldest = times[len(times) - limit] if limit > 0 else now
            retry_at = oldest + timedelta(days=1)
            raise SuppressionRemovalLimitReached(
                ngettext(
                    "Your firm can unblock only %(count)d address in 24 hours. Try again after "
                    "%(time)s: what you typed is kept below.",
                    "Your firm can unblock only %(count)d addresses in 24 hours. Try again after "
                    "%(time)s: what you typed is kept below.",
                    limit,
                )
                % {
                    "count": limit,
                    "time": date_format(timezone.localtime(retry_at), "SHORT_DATETIME_FORMAT"),
                },
                retry_at,
            )
        if not suppression_remove(suppression=suppression, removed_by=removed_by, note=note):
            return False
        AuditEntry.objects.create(
            firm=firm,
            grant=grant,
            actor=removed_by,
            kind=AuditEntry.Kind.SUPPRESSION_REMOVED,
            method=method,
            path=path[:500],
            # Named here, not read from the request's resolver_match: after re-authentication
            # allauth replays the request from its sign-in view.
            view_name="invoicing:suppression_remove",
            object_ref=suppression.normalized[:200],
            status_code=302,
        )
    return True
