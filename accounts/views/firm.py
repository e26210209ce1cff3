from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import EditorAccessForm, FirmProfileForm
from accounts.models import AuditEntry, Role
from accounts.support import SupportAccessError, active_grant, grant_create, grant_revoke
from portal.emails import platform_address
from portal.tenancy import roles_required

OWNERS_AND_ADMINS = (Role.OWNER, Role.ADMIN)


@roles_required(*OWNERS_AND_ADMINS)
@require_http_methods(["GET", "POST"])
def firm_profile(request: HttpRequest) -> HttpResponse:
    can_edit = request.member_role == Role.OWNER
    form = FirmProfileForm(request.POST or None, instance=request.firm)
    if request.method == "POST":
        if not can_edit:
            return render(request, "portal/forbidden.html", status=403)
        if form.is_valid():
            form.save()
            messages.success(request, _("Firm settings saved."))
            return redirect("accounts:firm_profile")
    if not can_edit:
        for field in form.fields.values():
            field.disabled = True
    context = {
        "form": form,
        "can_edit": can_edit,
        "own_sender": request.firm.own_sender_address(),
        "platform_sender": platform_address(),
        "ownership_record": (
            request.firm.domain_ownership_record() if request.firm.sending_domain else ""
        ),
    }
    return render(request, "accounts/firm_profile.html", context)


def _editor_access_page(request: HttpRequest, form: EditorAccessForm, status: int = 200):
    grant = active_grant(request.firm)
    return render(
        request,
        "accounts/editor_access.html",
        {"form": form, "grant": grant, "can_edit": request.member_role == Role.OWNER},
        status=status,
    )


@roles_required(*OWNERS_AND_ADMINS)
def editor_access(request: HttpRequest) -> HttpResponse:
    grant = active_grant(request.firm)
    return _editor_access_page(request, EditorAccessForm(initial={"enabled": grant is not None}))


@roles_required(Role.OWNER)
@require_POST
@reauthentication_required
def editor_access_save(request: HttpRequest) -> HttpResponse:
    form = EditorAccessForm(request.POST)
    if not form.is_valid():
        return _editor_access_page(request, form, status=400)
    current = active_grant(request.firm)
    if not form.cleaned_data["enabled"]:
        if current:
            grant_revoke(grant=current, revoked_by=request.user)
            messages.success(
                request,
                _("Editor access is off. The support team can no longer sign in to your firm."),
            )
        return redirect("accounts:editor_access")
    try:
        grant = grant_create(
            firm=request.firm, granted_by=request.user, expires_at=form.expires_at()
        )
    except SupportAccessError as exc:
        if str(exc) == "too_long":
            form.add_error(None, _("Choose an earlier end date."))
        else:
            form.add_error(None, _("Choose an end date in the future."))
        return _editor_access_page(request, form, status=400)
    messages.success(
        request,
        _("Editor access is on until %(end)s.")
        % {"end": grant.expires_at.strftime("%Y-%m-%d %H:%M")},
    )
    return redirect("accounts:editor_access")


@roles_required(Role.OWNER)
@require_POST
def editor_access_revoke(request: HttpRequest) -> HttpResponse:
    grant = active_grant(request.firm)
    if grant is not None:
        grant_revoke(grant=grant, revoked_by=request.user)
        messages.success(request, _("Editor access revoked. Any support session ends now."))
    return redirect("accounts:editor_access")


@roles_required(Role.OWNER)
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.filter(firm=request.firm).select_related("actor")
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "accounts/audit_log.html", {"page": page})
