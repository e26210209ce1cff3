"""Send, send a test, resend one recipient, record a payment."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from accounts.models import Role
from invoicing.delivery.models import Delivery
from invoicing.forms import PaymentForm
from invoicing.invoices import InvoiceError
from invoicing.models import Invoice
from invoicing.paylinks import pay_link_revoke
from invoicing.payments.recording import payment_record
from invoicing.sending import delivery_resend, invoice_send, invoice_send_test, invoices_send_bulk
from invoicing.views.access import get_delivery_for_member, get_invoice_for_member
from portal.ratelimits import RateLimited, hit, limited_response
from portal.tenancy import member_required, roles_required


def _report(request: HttpRequest, deliveries: list[Delivery]) -> None:
    queued = [d for d in deliveries if d.status == Delivery.Status.QUEUED]
    held = [d for d in deliveries if d.status != Delivery.Status.QUEUED]
    if queued:
        messages.success(
            request,
            ngettext(
                "Sending to %(count)d recipient. Each one's progress is shown below.",
                "Sending to %(count)d recipients. Each one's progress is shown below.",
                len(queued),
            )
            % {"count": len(queued)},
        )
    for delivery in held:
        messages.error(
            request,
            _("Not sent to %(address)s: %(status)s. See below for what to do.")
            % {"address": delivery.address, "status": delivery.get_status_display()},
        )


@member_required
@require_POST
def invoice_send_view(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    try:
        deliveries = invoice_send(invoice=invoice)
    except InvoiceError as exc:
        messages.error(request, str(exc))
    else:
        _report(request, deliveries)
    return redirect(invoice)


@member_required
@require_POST
def invoice_send_test_view(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    try:
        hit("invoice_test", user_id=request.user.pk, firm_id=request.firm.pk)
    except RateLimited as limited:
        return limited_response(request, limited, invoice.get_absolute_url())
    try:
        delivery = invoice_send_test(invoice=invoice, user=request.user)
    except InvoiceError as exc:
        messages.error(request, str(exc))
    else:
        if delivery.status == Delivery.Status.QUEUED:
            messages.success(
                request,
                _("A test copy is on its way to %(address)s.") % {"address": delivery.address},
            )
        else:
            _report(request, [delivery])
    return redirect(invoice)


@member_required
@require_POST
def delivery_resend_view(request: HttpRequest, invoice_pk: int, delivery_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    delivery = get_delivery_for_member(request, invoice, delivery_pk)
    try:
        deliveries = delivery_resend(delivery=delivery)
    except InvoiceError as exc:
        messages.error(request, str(exc))
    else:
        _report(request, deliveries)
    return redirect(invoice)


@roles_required(Role.OWNER, Role.ADMIN)
@require_POST
def pay_link_revoke_view(request: HttpRequest, invoice_pk: int, delivery_pk: int) -> HttpResponse:
    """Revoke the Pay Now link of one email, from the delivery timeline (audited)."""
    invoice = get_invoice_for_member(request, invoice_pk)
    delivery = get_delivery_for_member(request, invoice, delivery_pk)
    if pay_link_revoke(delivery=delivery, actor=request.user, request=request):
        messages.success(
            request,
            _(
                "The Pay Now link sent to %(address)s no longer opens the invoice. Whoever "
                "opens it is told so and may ask you for a new one."
            )
            % {"address": delivery.address},
        )
    else:
        messages.info(request, _("That Pay Now link was already revoked."))
    return redirect(invoice)


@roles_required(Role.OWNER, Role.ADMIN)
@require_POST
def payment_record_view(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    form = PaymentForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect(invoice)
    try:
        payment_record(
            invoice=invoice,
            amount=form.cleaned_data["amount"],
            reference=form.cleaned_data["reference"],
            recorded_by=request.user,
            submission_key=form.cleaned_data["submission"],
        )
    except InvoiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Payment recorded."))
    return redirect(invoice)


@member_required
@require_POST
def invoices_send_drafts_view(request: HttpRequest) -> HttpResponse:
    """Send every draft of the firm at once (the month's invoices), over shared connections."""
    drafts = list(Invoice.objects.filter(firm=request.firm, status=Invoice.Status.DRAFT))
    result = invoices_send_bulk(invoices=drafts)
    sent = len(drafts) - len(result.refused)
    if sent:
        messages.success(
            request,
            ngettext(
                "%(count)d invoice is being sent.",
                "%(count)d invoices are being sent.",
                sent,
            )
            % {"count": sent},
        )
    # Blocked or malformed addresses were recorded, not sent: say so now, not only on each
    # invoice's page.
    held = sum(1 for d in result.deliveries if d.status != Delivery.Status.QUEUED)
    if held:
        messages.error(
            request,
            ngettext(
                "%(count)d recipient was not sent to (a blocked or invalid address). Each "
                "invoice shows which one and what to do.",
                "%(count)d recipients were not sent to (blocked or invalid addresses). Each "
                "invoice shows which ones and what to do.",
                held,
            )
            % {"count": held},
        )
    numbers = {invoice.pk: invoice.number for invoice in drafts}
    for pk, reason in result.refused.items():
        messages.error(
            request,
            _("Invoice #%(number)s was not sent: %(reason)s")
            % {"number": numbers[pk], "reason": reason},
        )
    if not drafts:
        messages.info(request, _("There are no draft invoices to send."))
    return redirect("invoicing:invoice_list")
