"""Firm-wide invoicing pages: the suppression list and the billing settings."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.models import Role
from invoicing.forms import BillingSettingsForm, SuppressionRemovalForm
from invoicing.selectors import billing_settings_get, suppression_list
from invoicing.services import billing_settings_update, suppression_remove
from invoicing.views.access import get_suppression_for_member
from portal.tenancy import roles_required


@roles_required(Role.OWNER, Role.ADMIN)
def suppressions(request: HttpRequest) -> HttpResponse:
    show_removed = request.GET.get("show") == "removed"
    rows = suppression_list(firm=request.firm, include_removed=show_removed)
    return render(
        request,
        "invoicing/suppressions.html",
        {"suppressions": rows, "show_removed": show_removed},
    )


@roles_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def suppression_remove_view(request: HttpRequest, suppression_pk: int) -> HttpResponse:
    suppression = get_suppression_for_member(request, suppression_pk)
    form = SuppressionRemovalForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if suppression_remove(
            suppression=suppression, removed_by=request.user, note=form.cleaned_data["note"]
        ):
            messages.success(
                request,
                _("%(address)s is no longer blocked. Resend the invoices it missed.")
                % {"address": suppression.normalized},
            )
        return redirect("invoicing:suppressions")
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "invoicing/suppression_remove.html",
        {"suppression": suppression, "form": form},
        status=status,
    )


@roles_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def billing_settings(request: HttpRequest) -> HttpResponse:
    current = billing_settings_get(firm=request.firm)
    form = BillingSettingsForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        billing_settings_update(
            firm=request.firm,
            payment_instructions=form.cleaned_data["payment_instructions"],
            currency=form.cleaned_data["currency"],
        )
        messages.success(request, _("Billing settings saved."))
        return redirect("invoicing:billing_settings")
    status = 400 if request.method == "POST" else 200
    return render(request, "invoicing/billing_settings.html", {"form": form}, status=status)
