"""Invoices as members see them: list, create, edit, detail, print, void."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db.models import prefetch_related_objects
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from invoicing.forms import (
    InvoiceFilterForm,
    InvoiceFilters,
    InvoiceForm,
    LineFormSet,
    empty_payment_form_html,
    line_initial,
)
from invoicing.invoices import InvoiceError, invoice_create, invoice_update, invoice_void
from invoicing.models import Invoice
from invoicing.payments.recording import invoice_may_have_reached_client, invoice_paid_amount
from invoicing.selectors import (
    OPEN_STATUSES,
    billing_settings_get,
    invoice_all_refused,
    invoice_list,
    invoice_payments,
    invoice_rows,
    invoice_timelines,
)
from invoicing.timeline import recipient_rows
from invoicing.views.access import get_invoice_for_member
from mailsync.selectors import clients_for_linking
from portal.paging import CappedPaginator
from portal.rows import rendered_rows
from portal.tenancy import clients_for, get_client_for_member, member_required

PAYMENT_ROLES = (Role.OWNER, Role.ADMIN)


@member_required
def invoice_list_view(request: HttpRequest) -> HttpResponse:
    clients = clients_for(request)
    filters = InvoiceFilterForm(request.GET or None, clients=clients)
    # The client filter is a search box (``client_q``): matching clients come back as links
    # that set ``client``; no page ever lists every client of the firm.
    client_q = request.GET.get("client_q", "").strip()[:200]
    keep = request.GET.copy()
    for name in ("page", "client", "client_q"):
        keep.pop(name, None)
    choices = clients_for_linking(firm=request.firm, query=client_q) if client_q else []
    choice_context = {"choices": choices, "client_q": client_q, "keep": keep.urlencode()}
    if request.headers.get("HX-Request") and "client_q" in request.GET:
        return render(request, "invoicing/_client_choices.html", choice_context)
    today = timezone.localdate()
    data = filters.cleaned_data if filters.is_valid() else {}
    client = data.get("client")
    invoices = invoice_list(
        firm=request.firm,
        status=data.get("status") or None,
        client_id=client.pk if client else None,
        issued_from=data.get("issued_from"),
        issued_to=data.get("issued_to"),
        overdue_on=today if data.get("overdue") else None,
    )
    page = CappedPaginator(invoices, settings.INVOICES_PER_PAGE).get_page(request.GET.get("page"))
    rows = invoice_rows(page.object_list, today=today)
    # The pager's links keep every filter; only the page number changes.
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("client_q", None)
    context = {
        "page": page,
        "rows": rows,
        "filters": filters,
        "filter_html": _filter_html(request.GET),
        "filter_query": query.urlencode(),
        "today": today,
        "chosen_client": client,
        **choice_context,
    }
    return render(request, "invoicing/list.html", context)


def _filter_html(query: QueryDict) -> list[SafeString]:
    """The list's filter fields as ``query`` submitted them: the status, then the dates."""
    shown = InvoiceFilters.of(query)
    return [
        rendered_rows(template, [shown])[0]
        for template in ("invoicing/_filter_status.html", "invoicing/_filter_dates.html")
    ]


@member_required
def client_invoices(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    invoices = invoice_list(firm=request.firm, client_id=client.pk)
    rows = invoice_rows(invoices, today=timezone.localdate(), with_client=False)
    return render(
        request,
        "invoicing/client_tab.html",
        {"client": client, "tab": "invoices", "rows": rows},
    )


def _form_page(
    request: HttpRequest, form: InvoiceForm, lines: LineFormSet, invoice: Invoice | None
) -> HttpResponse:
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "lines": lines, "invoice": invoice}
    return render(request, "invoicing/form.html", context, status=status)


@member_required
@require_http_methods(["GET", "POST"])
def invoice_create_view(request: HttpRequest) -> HttpResponse:
    clients = clients_for(request).filter(status="active").order_by("display_name", "pk")
    billing = billing_settings_get(firm=request.firm)
    initial = {
        "client": request.GET.get("client"),
        "currency": billing.currency,
        "issue_date": timezone.localdate(),
        "due_date": timezone.localdate() + timezone.timedelta(days=14),
    }
    form = InvoiceForm(request.POST or None, initial=initial, clients=clients)
    lines = LineFormSet(request.POST or None, prefix="lines")
    if request.method == "POST" and form.is_valid() and lines.is_valid():
        data = form.cleaned_data
        invoice = invoice_create(
            firm=request.firm,
            client=data["client"],
            created_by=request.user,
            currency=data["currency"],
            issue_date=data["issue_date"],
            due_date=data["due_date"],
            notes=data["notes"],
            lines=lines.lines(),
        )
        messages.success(request, _("Invoice #%(number)s created.") % {"number": invoice.number})
        return redirect(invoice)
    return _form_page(request, form, lines, None)


@member_required
@require_http_methods(["GET", "POST"])
def invoice_edit(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    if invoice.status != Invoice.Status.DRAFT:
        messages.error(
            request, _("Only a draft can be edited. Void this invoice and create a new one.")
        )
        return redirect(invoice)
    clients = clients_for(request).order_by("display_name", "pk")
    initial = {
        "client": invoice.client_id,
        "currency": invoice.currency,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "notes": invoice.notes,
    }
    form = InvoiceForm(request.POST or None, initial=initial, clients=clients)
    lines = LineFormSet(request.POST or None, prefix="lines", initial=line_initial(invoice))
    if request.method == "POST" and form.is_valid() and lines.is_valid():
        data = form.cleaned_data
        try:
            invoice_update(
                invoice=invoice,
                client=data["client"],
                currency=data["currency"],
                issue_date=data["issue_date"],
                due_date=data["due_date"],
                notes=data["notes"],
                lines=lines.lines(),
            )
        except InvoiceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, _("Invoice saved."))
        return redirect(invoice)
    return _form_page(request, form, lines, invoice)


@member_required
def invoice_detail(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    # Read once: the lines table and `invoice.total` both use them.
    prefetch_related_objects([invoice], "lines")
    timelines = invoice_timelines(invoice=invoice)
    payments = invoice_payments(invoice=invoice)
    can_record_payment = request.member_role in PAYMENT_ROLES and (
        invoice.status in (Invoice.Status.SENT, Invoice.Status.VIEWED)
        # A send with no outcome yet (or an unknown one): the client may be paying already.
        or (invoice.status == Invoice.Status.DRAFT and invoice_may_have_reached_client(invoice))
    )
    context = {
        "invoice": invoice,
        "lines": list(invoice.lines.all()),
        # The troubleshooting app's template tags read the timelines to flag recipients.
        "timelines": timelines,
        "recipients": recipient_rows(invoice, timelines, role=request.member_role),
        "all_refused": invoice.status == Invoice.Status.DRAFT
        and invoice_all_refused(timelines=timelines),
        "overdue": invoice.status in OPEN_STATUSES and invoice.due_date < timezone.localdate(),
        "payments": payments,
        "paid_amount": invoice_paid_amount(invoice=invoice, payments=payments),
        "payment_form": empty_payment_form_html() if can_record_payment else None,
    }
    return render(request, "invoicing/detail.html", context)


@member_required
def invoice_print(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    prefetch_related_objects([invoice], "lines")
    context = {
        "invoice": invoice,
        "firm": invoice.firm,
        "lines": list(invoice.lines.all()),
        "billing": billing_settings_get(firm=invoice.firm),
    }
    return render(request, "invoicing/print.html", context)


@member_required
@require_POST
def invoice_void_view(request: HttpRequest, invoice_pk: int) -> HttpResponse:
    invoice = get_invoice_for_member(request, invoice_pk)
    try:
        invoice_void(invoice=invoice)
    except InvoiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Invoice #%(number)s is void.") % {"number": invoice.number})
    return redirect(invoice)
