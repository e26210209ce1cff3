"""Recording money received, and telling the firm an invoice was paid.

Every provider ends here: the offline form, Stripe's webhook (`invoicing.payments.stripe`).
A payment is always kept; one that cannot count toward its invoice carries a problem code
the owner sees. The invoice is paid once the counted payments cover its total, and the
owners are told once (`invoice_paid_notify_once`, run by a task).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Membership, Role, User
from invoicing.delivery.models import Delivery
from invoicing.emails import invoice_paid_notify
from invoicing.enqueue import invoice_paid_notify_soon
from invoicing.invoices import InvoiceError
from invoicing.models import Invoice, Payment

logger = logging.getLogger(__name__)

S = Delivery.Status


# Payments kept but not counted toward their invoice: the money must go back or elsewhere.
NOT_COUNTED = (Payment.Problem.VOID_INVOICE, Payment.Problem.CURRENCY_MISMATCH)


def invoice_paid_amount(*, invoice: Invoice, payments: list[Payment] | None = None) -> Decimal:
    """What the client paid toward this invoice, in its currency. ``payments``: all of the
    invoice's payments, when the caller has read them (summed here, not again in SQL)."""
    if payments is not None:
        counted = [p.amount for p in payments if p.problem_code not in NOT_COUNTED]
        return sum(counted, Decimal("0.00"))
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
            invoice_paid_notify_soon(invoice_id=locked.pk)
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
