from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.models import SupportGrant
from accounts.support import (
    SupportAccessError,
    active_grants,
    is_support_user,
    support_enter,
    support_exit,
)


def _support_only(request: HttpRequest) -> HttpResponse | None:
    if not is_support_user(request.user):
        return render(request, "portal/forbidden.html", status=403)
    return None


@login_required
def support_home(request: HttpRequest) -> HttpResponse:
    if refused := _support_only(request):
        return refused
    return render(request, "accounts/support_home.html", {"grants": active_grants()})


@login_required
@require_POST
def support_enter_view(request: HttpRequest, grant_pk: int) -> HttpResponse:
    if refused := _support_only(request):
        return refused
    grant = get_object_or_404(SupportGrant, pk=grant_pk)
    try:
        support_enter(request=request, grant=grant)
    except SupportAccessError:
        messages.error(request, _("This firm's editor access is no longer on."))
        return redirect("accounts:support")
    return redirect("portal:client_list")


@login_required
@require_POST
def support_exit_view(request: HttpRequest) -> HttpResponse:
    support_exit(request=request, grant=getattr(request, "support_grant", None), reason="exit")
    messages.success(request, _("You left the firm."))
    return redirect("accounts:support")
