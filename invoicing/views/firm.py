"""Firm-wide invoicing pages: the suppression list and the billing settings."""

from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.models import Role
from invoicing.delivery.models import Suppression
from invoicing.delivery.suppression import (
    SuppressionRemovalLimitReached,
    suppression_remove_audited,
)
from invoicing.forms import BillingSettingsForm, SuppressionRemovalForm
from invoicing.invoices import billing_settings_update
from invoicing.selectors import billing_settings_get, suppression_list
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


def _removal_page(
    request: HttpRequest, suppression: Suppression, form: SuppressionRemovalForm, status: int
) -> HttpResponse:
    context = {"suppression": suppression, "form": form}
    return render(request, "invoicing/suppression_remove.html", context, status=status)


@reauthentication_required
def _suppression_remove_post(request: HttpRequest, suppression: Suppression) -> HttpResponse:
    form = SuppressionRemovalForm(request.POST, blocked=suppression.normalized)
    if not form.is_valid():
        return _removal_page(request, suppression, form, status=400)
    try:
        removed = suppression_remove_audited(
            suppression=suppression,
            removed_by=request.user,
            note=form.cleaned_data["note"],
            grant=getattr(request, "support_grant", None),
            method=request.method,
            path=request.path,
        )
    except SuppressionRemovalLimitReached as limit:
        form.add_error(None, str(limit))
        return _removal_page(request, suppression, form, status=429)
    if removed:
        messages.success(
            request,
            _("%(address)s is no longer blocked. Resend the invoices it missed.")
            % {"address": suppression.normalized},
        )
    return redirect("invoicing:suppressions")


@roles_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def suppression_remove_view(request: HttpRequest, suppression_pk: int) -> HttpResponse:
    """Owners only, with the password asked again (as for Editor access) on the POST.

    The block is looked up first, so another firm's block is a 404 before any sign-in page.
    """
    suppression = get_suppression_for_member(request, suppression_pk)
    if suppression.removed_at is not None:
        messages.info(
            request, _("%(address)s is no longer blocked.") % {"address": suppression.normalized}
        )
        return redirect("invoicing:suppressions")
    if request.method == "POST":
        return _suppression_remove_post(request, suppression)
    form = SuppressionRemovalForm(blocked=suppression.normalized)
    return _removal_page(request, suppression, form, status=200)


@roles_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def billing_settings(request: HttpRequest) -> HttpResponse:
    current = billing_settings_get(firm=request.firm)
    form = BillingSettingsForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        billing_settings_update(firm=request.firm, **form.cleaned_data)
        messages.success(request, _("Billing settings saved."))
        return redirect("invoicing:billing_settings")
    status = 400 if request.method == "POST" else 200
    return render(request, "invoicing/billing_settings.html", {"form": form}, status=status)
