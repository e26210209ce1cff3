"""Sending invoices, as a member asks for it: Send, Send test, Send all selected, Resend.

Each action decides who receives the invoice (the client's invoice addresses), refuses what
cannot be sent with a message for the member (`InvoiceError`), never emails an address
twice while an earlier send to it has no outcome, renews the Pay Now links and writes one
queued delivery per recipient (`invoicing.delivery.outbox`); the emails leave from a task
once the transaction commits (`invoicing.enqueue`, then `invoicing.delivery.sender`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from invoicing.delivery.models import Delivery
from invoicing.delivery.outbox import (
    address_problems_lift,
    deliveries_in_flight,
    deliveries_prepare_many,
    delivery_prepare,
)
from invoicing.enqueue import deliveries_send_soon, deliveries_send_soon_chunked
from invoicing.invoices import InvoiceError
from invoicing.models import Invoice, InvoiceLine, PayLink
from invoicing.paylinks import pay_links_revoke, pay_links_revoke_many
from invoicing.selectors import invoice_recipients
from portal.addresses import normalize_address
from portal.models import ContactAddress


def _already_sending() -> str:
    return _(
        "This invoice is already being sent to every recipient. Each one's progress is shown below."
    )


def _queue_to(invoice: Invoice, recipients: Sequence[ContactAddress]) -> list[Delivery]:
    """Renew the links to these addresses and queue one delivery each, sent after commit."""
    pay_links_revoke(invoice=invoice, normalized=[r.normalized for r in recipients])
    deliveries = [
        delivery_prepare(invoice=invoice, address=r.address, normalized=r.normalized)
        for r in recipients
    ]
    deliveries_send_soon(deliveries)
    return deliveries


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
    busy = deliveries_in_flight([invoice.pk])
    recipients = [r for r in recipients if (invoice.pk, r.normalized) not in busy]
    if not recipients:
        raise InvoiceError(_already_sending())
    if invoice.status == Invoice.Status.DRAFT:
        invoice.client_name = invoice.client.display_name
        invoice.save(update_fields=["client_name"])
    return _queue_to(invoice, recipients)


@transaction.atomic
def invoice_send_test(*, invoice: Invoice, user: User) -> Delivery:
    """The same email to the member: never changes the invoice, never touches suppression."""
    if not invoice.lines.exists():
        raise InvoiceError(_("Add at least one line before sending the invoice."))
    delivery = delivery_prepare(
        invoice=invoice,
        address=user.email,
        normalized=normalize_address(user.email),
        is_test=True,
    )
    deliveries_send_soon([delivery])
    return delivery


@dataclass
class BulkSendResult:
    """What a bulk send did: the deliveries written, and the invoices it refused and why."""

    deliveries: list[Delivery]
    refused: dict[int, str]  # invoice id -> the message `invoice_send` would have raised


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
    busy = deliveries_in_flight(list(current))
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

    pay_links_revoke_many(
        invoice_ids=[i.pk for i, _r in sendable],
        pairs={(i.pk, r.normalized) for i, rs in sendable for r in rs},
    )

    deliveries = deliveries_prepare_many(
        targets=[(invoice, r.address, r.normalized) for invoice, rs in sendable for r in rs]
    )
    deliveries_send_soon_chunked(deliveries)
    return BulkSendResult(deliveries, refused)


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
    busy = deliveries_in_flight([invoice.pk])
    targets = [t for t in targets if (invoice.pk, t.normalized) not in busy]
    if not targets:
        raise InvoiceError(
            _("This invoice is already on its way to this address. Its progress is shown below.")
        )
    PayLink.objects.filter(delivery=delivery, revoked_at=None).update(revoked_at=timezone.now())
    return _queue_to(invoice, targets)
