"""Reads of invoicing data. Every function takes the firm (or an object already scoped to it)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.db.models import QuerySet
from django.utils.safestring import SafeString

from accounts.models import User
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.models import (
    FirmBillingSettings,
    Invoice,
    InvoiceLine,
    PayLink,
    Payment,
    line_amount,
)
from portal import joined_rows
from portal.choices import value_label
from portal.models import Contact, ContactAddress, Firm
from portal.rows import rendered_rows

# An invoice the client still owes: sent or opened, not paid, not void.
OPEN_STATUSES = (Invoice.Status.SENT, Invoice.Status.VIEWED)

# The invoice fields a list of invoices shows (invoicing/_table.html).
LIST_FIELDS = ("firm", "client", "number", "currency", "issue_date", "due_date", "status")


def invoice_list(
    *,
    firm: Firm,
    status: str | None = None,
    client_id: int | None = None,
    issued_from: date | None = None,
    issued_to: date | None = None,
    overdue_on: date | None = None,
) -> QuerySet[Invoice]:
    """The firm's invoices with their clients' names, as `invoice_rows` shows them.

    ``overdue_on``: only invoices still open whose due date is before that day.
    """
    invoices = (
        Invoice.objects.filter(firm=firm)
        # What a row shows (number, dates, status, the client's name): a page of whole
        # invoices, clients and lines was 200 model instances full of timestamps.
        .only(*LIST_FIELDS, "client__display_name")
        .select_related("client")
    )
    if status:
        invoices = invoices.filter(status=status)
    if client_id:
        invoices = invoices.filter(client_id=client_id)
    if issued_from:
        invoices = invoices.filter(issue_date__gte=issued_from)
    if issued_to:
        invoices = invoices.filter(issue_date__lte=issued_to)
    if overdue_on:
        invoices = invoices.filter(status__in=OPEN_STATUSES, due_date__lt=overdue_on)
    return invoices.order_by("-number")


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    """One invoice as a list shows it (invoicing/_invoice_row.html reads this and nothing
    else, and is rendered once per content: portal.rows)."""

    pk: int
    number: int
    client_name: str | None  # None: the list is the client's own
    issue_date: date
    due_date: date
    status: str
    status_label: str
    overdue: bool
    total: Decimal
    currency: str

    @classmethod
    def of(
        cls, values: tuple, *, total: Decimal, today: date | None, with_client: bool
    ) -> InvoiceRow:
        """One row of ``ROW_FIELDS``; ``today`` None: no invoice is overdue."""
        pk, number, client_name, issue_date, due_date, status, currency = values
        return cls(
            pk=pk,
            number=number,
            client_name=client_name if with_client else None,
            issue_date=issue_date,
            due_date=due_date,
            status=status,
            status_label=value_label(Invoice, "status", status),
            overdue=bool(today and due_date < today and status in OPEN_STATUSES),
            total=total,
            currency=currency,
        )


# What a row reads of an invoice and its client, as plain values: a page of 50 invoices
# and their clients as (deferred) model instances was 4,000 calls of Python.
ROW_FIELDS = (
    "pk",
    "number",
    "client__display_name",
    "issue_date",
    "due_date",
    "status",
    "currency",
)


def invoice_rows(
    invoices: QuerySet[Invoice], *, today: date | None, with_client: bool = True
) -> list[SafeString]:
    """The HTML rows of a list of invoices (`invoice_list`, or a page of it), as
    invoicing/_table.html shows them."""
    found = list(invoices.values_list(*ROW_FIELDS))
    totals = invoice_totals([values[0] for values in found])
    rows = [
        InvoiceRow.of(values, total=totals[values[0]], today=today, with_client=with_client)
        for values in found
    ]
    return rendered_rows("invoicing/_invoice_row.html", rows)


def invoice_totals(invoice_ids: list[int]) -> dict[int, Decimal]:
    """What each invoice comes to, in one query: `Invoice.total` without model instances.

    Summed here, line by line, rather than in SQL, so that each line is rounded exactly as
    `InvoiceLine.amount` rounds it on every database backend (SQLite keeps decimals as
    floats). Plain rows, not prefetched lines: a prefetched line points back at its invoice,
    and a page of 50 invoices left some 1,600 objects in reference cycles that only the
    garbage collector frees; its full collections, every few dozen pages, held a worker for
    6-8 ms each (the invoice list's p95 was 2.5 times its median).
    """
    totals = dict.fromkeys(invoice_ids, Decimal("0.00"))
    if not invoice_ids:
        return totals
    # Our own SQL (portal.joined_rows): the queryset cost more Python to build than the
    # page's lines took to read.
    lines = joined_rows.values_from(
        _LINE_PARTS,
        f"FROM {InvoiceLine._meta.db_table} l"
        f" WHERE l.invoice_id IN ({joined_rows.placeholders(invoice_ids)})",
        invoice_ids,
    )
    for invoice_id, quantity, unit_price in lines:
        totals[invoice_id] += line_amount(quantity, unit_price)
    return totals


_LINE_PARTS = (joined_rows.Part(InvoiceLine, "l", ("invoice", "quantity", "unit_price")),)


def invoice_recipients(*, invoice: Invoice) -> list[ContactAddress]:
    """Every address of the client that receives invoices, once per normalized address."""
    seen: set[str] = set()
    recipients = []
    addresses = ContactAddress.objects.filter(
        contact__client_id=invoice.client_id, receives_invoices=True
    ).order_by("contact__name", "-is_primary", "pk")
    for address in addresses:
        if address.normalized not in seen:
            seen.add(address.normalized)
            recipients.append(address)
    return recipients


@dataclass
class RecipientTimeline:
    """All deliveries of one invoice to one address, newest first, with their events."""

    normalized: str
    address: str
    deliveries: list[Delivery] = field(default_factory=list)
    contact_address_pk: int | None = None  # the client's address it went to, if still there
    # Each delivery's events newest first, and its Pay Now link (none: sent without one).
    events: dict[int, list[DeliveryEvent]] = field(default_factory=dict)
    links: dict[int, PayLink] = field(default_factory=dict)

    @property
    def latest(self) -> Delivery:
        return self.deliveries[0]


# What an invoice's page reads of its sends: each delivery whole, its link's state, its
# events as the timeline shows them, and the client's addresses to link to.
_SEND_PARTS = (
    joined_rows.Part(Delivery, "d", tuple(f.name for f in Delivery._meta.concrete_fields)),
    joined_rows.Part(PayLink, "p", ("delivery_id", "revoked_at", "last_viewed_at")),
)
_EVENT_PARTS = (
    joined_rows.Part(
        DeliveryEvent,
        "e",
        ("delivery_id", "kind", "source", "occurred_at", "reply_code", "status_code", "diagnostic"),
    ),
)
_ADDRESS_PARTS = (joined_rows.Part(ContactAddress, "a", ("normalized",)),)


def invoice_timelines(*, invoice: Invoice) -> list[RecipientTimeline]:
    """The invoice's sends by recipient (tests apart), newest first. Three queries of our
    own SQL (portal.joined_rows): as querysets, a related link, a prefetch of the events and
    the client's addresses as whole rows were 6,000 Python calls, a quarter of the page."""
    deliveries = joined_rows.select_from(
        _SEND_PARTS,
        f"FROM {Delivery._meta.db_table} d"
        f" LEFT JOIN {PayLink._meta.db_table} p ON p.delivery_id = d.id"
        " WHERE d.invoice_id = %s ORDER BY d.created DESC, d.id DESC",
        [invoice.pk],
    )
    events: dict[int, list[DeliveryEvent]] = defaultdict(list)
    if deliveries:
        for (event,) in joined_rows.select_from(
            _EVENT_PARTS,
            f"FROM {DeliveryEvent._meta.db_table} e"  # noqa: S608 (no values in it)
            f" WHERE e.delivery_id IN (SELECT id FROM {Delivery._meta.db_table}"
            "  WHERE invoice_id = %s) ORDER BY e.id DESC",
            [invoice.pk],
        ):
            events[event.delivery_id].append(event)
    # By normalized address; of several, the last in the client's order (primary first).
    addresses = {
        address.normalized: address.pk
        for (address,) in joined_rows.select_from(
            _ADDRESS_PARTS,
            f"FROM {ContactAddress._meta.db_table} a"
            f" JOIN {Contact._meta.db_table} c ON c.id = a.contact_id"
            " WHERE c.client_id = %s ORDER BY a.is_primary DESC, a.address, a.id",
            [invoice.client_id],
        )
    }
    timelines: dict[tuple[bool, str], RecipientTimeline] = {}
    for delivery, link in deliveries:
        key = (delivery.is_test, delivery.normalized)
        if key not in timelines:
            timelines[key] = RecipientTimeline(
                normalized=delivery.normalized,
                address=delivery.address,
                contact_address_pk=None if delivery.is_test else addresses.get(delivery.normalized),
            )
        timeline = timelines[key]
        timeline.deliveries.append(delivery)
        timeline.events[delivery.pk] = events[delivery.pk]
        if link is not None:
            timeline.links[delivery.pk] = link
    return list(timelines.values())


def invoice_all_refused(*, timelines: list[RecipientTimeline]) -> bool:
    """True when the latest send reached nobody: every recipient's newest delivery failed."""
    latest = [t.latest for t in timelines if not t.latest.is_test]
    failed = {
        Delivery.Status.FAILED,
        Delivery.Status.SUPPRESSED,
        Delivery.Status.REJECTED,
        Delivery.Status.BOUNCED,
        Delivery.Status.SOFT_BOUNCED,
    }
    return bool(latest) and all(d.status in failed for d in latest)


def billing_settings_get(*, firm: Firm) -> FirmBillingSettings:
    found = FirmBillingSettings.objects.filter(firm=firm).first()
    return found or FirmBillingSettings(firm=firm)


def suppression_list(*, firm: Firm, include_removed: bool = False) -> QuerySet[Suppression]:
    suppressions = Suppression.objects.filter(firm=firm).select_related(
        "source_event", "removed_by"
    )
    if not include_removed:
        suppressions = suppressions.filter(removed_at__isnull=True)
    return suppressions.order_by("-created", "-pk")


def suppression_removal_times(*, firm: Firm, since: datetime) -> list[datetime]:
    """When the firm's blocks lifted since then were lifted, oldest first (the daily limit)."""
    return list(
        Suppression.objects.filter(firm=firm, removed_at__gte=since)
        .order_by("removed_at")
        .values_list("removed_at", flat=True)
    )


# An invoice page's payments, with the email of the member who recorded each by hand.
_PAYMENT_PARTS = (joined_rows.Part(Payment, "p"), joined_rows.Part(User, "u", ("email",)))


def invoice_payments(*, invoice: Invoice) -> list[Payment]:
    """The invoice's payments in the order they were recorded, each with who recorded it
    (``recorded_by``, None for a provider's). Our own SQL (portal.joined_rows): the
    invoice's page reads them on every view, and the queryset with ``select_related`` cost
    more Python to build than the query took."""
    payments = []
    for payment, recorded_by in joined_rows.select_from(
        _PAYMENT_PARTS,
        f"FROM {Payment._meta.db_table} p LEFT JOIN {User._meta.db_table} u"
        " ON u.id = p.recorded_by_id WHERE p.invoice_id = %s ORDER BY p.id",
        [invoice.pk],
    ):
        Payment.recorded_by.field.set_cached_value(payment, recorded_by)
        Payment.invoice.field.set_cached_value(payment, invoice)
        payments.append(payment)
    return payments
