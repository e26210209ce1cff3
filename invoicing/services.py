"""Changes to invoices, their deliveries, Pay Now links, payments and the suppression list.

Sending is an outbox: `invoice_send` writes one queued `Delivery` per recipient and enqueues
their ids once the transaction commits; `deliveries_send` (run by the task) sends each and
records what the server said through `delivery_event_record`, so the delivery record never
claims more than happened.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from email.utils import make_msgid

from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import get_connection
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Membership, Role, User
from invoicing.emails import invoice_email_build, invoice_paid_notify, platform_address
from invoicing.events import (
    active_suppression,
    active_suppressions,
    classify_reply,
    delivery_event_record,
)
from invoicing.models import (
    Delivery,
    FirmBillingSettings,
    Invoice,
    InvoiceLine,
    PayLink,
    Payment,
    Suppression,
)
from invoicing.selectors import invoice_recipients
from invoicing.verp import new_verp_token
from portal.addresses import AddressError, normalize_address, validate_address
from portal.models import Client, ContactAddress, Firm

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
    if invoice.status == Invoice.Status.PAID:
        raise InvoiceError(_("A paid invoice cannot be voided."))
    invoice.status = Invoice.Status.VOID
    invoice.save(update_fields=["status"])
    # Nobody should be asked to pay a void invoice through a link they still hold.
    PayLink.objects.filter(invoice=invoice, revoked_at=None).update(revoked_at=timezone.now())
    return invoice


# --- sending ----------------------------------------------------------------------------


def _message_id() -> str:
    return make_msgid(domain=platform_address().rpartition("@")[2] or "portal.localhost")


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


@transaction.atomic
def invoice_send(*, invoice: Invoice) -> list[Delivery]:
    """Queue one email per address of the client that receives invoices."""
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
    current = {i.pk: i for i in Invoice.objects.select_related("client", "firm").filter(pk__in=pks)}
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
            sendable.append((invoice, recipients[invoice.client_id]))

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

    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                firm_id=invoice.firm_id,
                invoice=invoice,
                client_id=invoice.client_id,
                address=r.address,
                normalized=r.normalized,
                verp_token=new_verp_token(),
                message_id=_message_id(),
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


def delivery_soft_retry(*, delivery_id: int) -> list[Delivery]:
    """Send again after a temporary refusal, unless something newer already happened."""
    delivery = Delivery.objects.select_related("invoice").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != S.SOFT_BOUNCED:
        return []
    newer = Delivery.objects.filter(
        invoice_id=delivery.invoice_id, normalized=delivery.normalized, pk__gt=delivery.pk
    )
    if newer.exists() or delivery.invoice.status in (Invoice.Status.VOID, Invoice.Status.PAID):
        return []
    try:
        return delivery_resend(delivery=delivery)
    except InvoiceError:
        return []  # the address left the client meanwhile: nothing to retry


def _record_accepted(delivery: Delivery, esp_message_id: str = "", *, locked: bool = False) -> None:
    if esp_message_id:
        Delivery.objects.filter(pk=delivery.pk).update(esp_message_id=esp_message_id[:255])
        delivery.esp_message_id = esp_message_id[:255]
    delivery_event_record(delivery=delivery, kind=S.SENT, source="smtp", locked=locked)
    if delivery.is_test:
        return
    invoice = delivery.invoice
    # Sent only once a server accepted it for at least one recipient. An invoice never goes
    # back to draft, so one already known to be past draft needs no UPDATE (the bulk sender
    # shares one Invoice object between the batch's deliveries of the same invoice).
    if invoice.status == Invoice.Status.DRAFT:
        now = timezone.now()
        Invoice.objects.filter(pk=delivery.invoice_id, status=Invoice.Status.DRAFT).update(
            status=Invoice.Status.SENT, sent_at=now
        )
        if locked:
            invoice.status, invoice.sent_at = Invoice.Status.SENT, now


def _record_esp_status(delivery: Delivery, message: object, *, locked: bool = False) -> None:
    """Read anymail's per-recipient answer: rejected or invalid is an event, not a send."""
    status = getattr(message, "anymail_status", None)
    recipient = None
    if status is not None and status.recipients:
        recipient = status.recipients.get(delivery.address) or next(
            iter(status.recipients.values())
        )
    raw_id = recipient.message_id if recipient is not None else None
    message_id = "" if raw_id is None else str(raw_id)
    if recipient is not None and recipient.status in ("rejected", "invalid"):
        if message_id:
            Delivery.objects.filter(pk=delivery.pk).update(esp_message_id=message_id[:255])
        invalid = recipient.status == "invalid"
        delivery_event_record(
            delivery=delivery,
            locked=locked,
            kind=S.BOUNCED if invalid else S.REJECTED,
            source="webhook",
            reason=recipient.status,
            diagnostic=_("The email service refused this recipient (%(status)s).")
            % {"status": recipient.status},
            problem_code="delivery.invalid_address" if invalid else "delivery.rejected_policy",
        )
        return
    _record_accepted(delivery, message_id, locked=locked)


# Deliveries read together before sending: one query for them with invoice, firm and client,
# one for the invoices' lines and one for the suppression list, instead of a few per email.
SEND_PREFETCH = 100


@dataclass
class _SendBatch:
    """What the sender needs about a run of deliveries, read in three queries."""

    deliveries: dict[int, Delivery]
    lines: dict[int, list[InvoiceLine]]
    suppressions: dict[tuple[int, str], Suppression]
    with_link: set[int]

    @classmethod
    def load(cls, delivery_ids: Sequence[int]) -> _SendBatch:
        deliveries = {
            d.pk: d
            for d in Delivery.objects.filter(pk__in=list(delivery_ids), status=S.QUEUED)
            .select_related("invoice__firm", "invoice__client")
            .order_by()
        }
        lines: dict[int, list[InvoiceLine]] = {}
        invoice_ids = {d.invoice_id for d in deliveries.values()}
        for line in InvoiceLine.objects.filter(invoice_id__in=invoice_ids):
            lines.setdefault(line.invoice_id, []).append(line)
        # One Invoice object per invoice id, so marking one sent in memory is seen by all of
        # its deliveries in the batch.
        invoices: dict[int, Invoice] = {}
        for delivery in deliveries.values():
            delivery.invoice = invoices.setdefault(delivery.invoice_id, delivery.invoice)
        suppressions = active_suppressions(
            pairs=((d.firm_id, d.normalized) for d in deliveries.values() if not d.is_test)
        )
        # A queued delivery has no link unless something outside the sender made one; those
        # few keep the update-or-create path, every other link is a plain insert.
        with_link = set(
            PayLink.objects.filter(delivery_id__in=list(deliveries)).values_list(
                "delivery_id", flat=True
            )
        )
        return cls(deliveries, lines, suppressions, with_link)


def deliveries_send(*, delivery_ids: Sequence[int]) -> list[int]:
    """Send queued deliveries over one connection; return the ids to retry later.

    Each delivery is claimed under a row lock and only while still queued, so a retried or
    duplicated task never sends twice what it has already recorded. Each one commits on its
    own, so a crash mid-batch re-sends at most the one email in flight.
    """
    retry: list[int] = []
    ids = list(delivery_ids)
    connection = get_connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError):
        return ids  # the server is unreachable: nothing was sent or recorded
    try:
        for first in range(0, len(ids), SEND_PREFETCH):
            chunk = ids[first : first + SEND_PREFETCH]
            batch = _SendBatch.load(chunk)
            for position, delivery_id in enumerate(chunk):
                try:
                    _delivery_send_one(delivery_id, connection, batch)
                except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError):
                    # The server went away: nothing was recorded for this one or the rest.
                    retry.extend(ids[first + position :])
                    return retry
                except (smtplib.SMTPException, AnymailError):
                    retry.append(delivery_id)
    finally:
        connection.close()
    return retry


def _delivery_send_one(delivery_id: int, connection: object, batch: _SendBatch) -> None:
    delivery = batch.deliveries.get(delivery_id)
    if delivery is None:
        return  # no longer queued when the batch was read
    with transaction.atomic():
        # The claim: still queued, and not held by another worker. Only the columns that
        # change after creation are read again; the rest came with the batch.
        claimed = (
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id, status=S.QUEUED)
            .values_list("problem_code", "esp_message_id")
            .first()
        )
        if claimed is None:
            return  # already sent, or another worker holds it
        delivery.status = S.QUEUED
        delivery.problem_code, delivery.esp_message_id = claimed
        if not delivery.is_test:
            # Checked again at send time (read with the batch, moments ago): the address may
            # have been blocked since it was queued.
            suppression = batch.suppressions.get((delivery.firm_id, delivery.normalized))
            if suppression is not None:
                _record_suppressed(delivery, suppression, locked=True)
                return
        if delivery_id in batch.with_link:
            token = pay_link_create(delivery=delivery)
        else:
            token = _pay_link_insert(delivery)
        invoice = delivery.invoice
        message = invoice_email_build(
            delivery=delivery,
            invoice=invoice,
            pay_token=token,
            lines=batch.lines.get(invoice.pk, []),
        )
        try:
            connection.send_messages([message])  # type: ignore[attr-defined]
        except smtplib.SMTPRecipientsRefused as exc:
            for code, text in exc.recipients.values():
                _record_refusal(delivery, code, text, "RCPT", locked=True)
            return
        except smtplib.SMTPSenderRefused as exc:
            _record_refusal(delivery, exc.smtp_code, exc.smtp_error, "MAIL", locked=True)
            return
        except smtplib.SMTPDataError as exc:
            _record_refusal(delivery, exc.smtp_code, exc.smtp_error, "DATA", locked=True)
            return
        except AnymailRecipientsRefused:
            pass  # anymail_status on the message says which and why; read below
        _record_esp_status(delivery, message, locked=True)


def deliveries_fail(*, delivery_ids: Sequence[int], diagnostic: str) -> None:
    """Give up on deliveries the server never took, after the task's retries."""
    for delivery in Delivery.objects.filter(pk__in=list(delivery_ids), status=S.QUEUED):
        delivery_event_record(
            delivery=delivery,
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


def _pay_link_insert(delivery: Delivery) -> str:
    """`pay_link_create` for a delivery known to have no link yet: one INSERT, no look-up."""
    token = secrets.token_urlsafe(32)  # 256 bits
    PayLink.objects.create(
        delivery=delivery,
        invoice_id=delivery.invoice_id,
        token_hash=pay_token_hash(token),
        expires_at=timezone.now() + timedelta(days=settings.PAY_LINK_DAYS),
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


def invoice_paid_amount(*, invoice: Invoice) -> Decimal:
    return invoice.payments.aggregate(total=Sum("amount"))["total"] or Decimal("0.00")


def payment_record(
    *,
    invoice: Invoice,
    amount: Decimal,
    provider: str = "offline",
    reference: str = "",
    recorded_by: User | None = None,
) -> Payment:
    """Record money received; the invoice is paid once payments cover its total."""
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status in (Invoice.Status.VOID, Invoice.Status.DRAFT):
            raise InvoiceError(_("Payments can only be recorded on a sent invoice."))
        if amount <= 0:
            raise InvoiceError(_("The amount must be more than zero."))
        payment = Payment.objects.create(
            invoice=locked,
            provider=provider,
            amount=amount,
            currency=locked.currency,
            reference=reference,
            recorded_by=recorded_by,
        )
        became_paid = (
            locked.status != Invoice.Status.PAID
            and invoice_paid_amount(invoice=locked) >= locked.total
        )
        if became_paid:
            locked.status = Invoice.Status.PAID
            locked.paid_at = timezone.now()
            locked.save(update_fields=["status", "paid_at"])
            from invoicing.tasks import invoice_paid_notify_task

            transaction.on_commit(lambda: invoice_paid_notify_task.delay(locked.pk))
    invoice.refresh_from_db()
    return payment


def invoice_paid_notify_owners(*, invoice: Invoice) -> None:
    owners = list(
        Membership.objects.filter(firm_id=invoice.firm_id, role=Role.OWNER).values_list(
            "user__email", flat=True
        )
    )
    invoice_paid_notify(invoice=invoice, owners=owners)


# --- firm settings and suppression ------------------------------------------------------


def billing_settings_update(
    *, firm: Firm, payment_instructions: str, currency: str
) -> FirmBillingSettings:
    found, _created = FirmBillingSettings.objects.update_or_create(
        firm=firm,
        defaults={"payment_instructions": payment_instructions, "currency": currency.upper()},
    )
    return found


def suppression_remove(*, suppression: Suppression, removed_by: User, note: str) -> bool:
    """Lift a block after the owner confirmed the address works; the row stays as history."""
    return bool(
        Suppression.objects.filter(pk=suppression.pk, removed_at=None).update(
            removed_at=timezone.now(), removed_by=removed_by, removal_note=note
        )
    )
