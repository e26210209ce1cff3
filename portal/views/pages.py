from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from portal.tenancy import member_required


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("portal:client_list")
    return redirect("account_login")


@member_required
def invoices(request: HttpRequest) -> HttpResponse:
    # Invoicing is not built yet: say so instead of showing an empty table that looks broken.
    return render(request, "portal/coming_later.html", {"section": "invoices"})


@member_required
def problems(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/coming_later.html", {"section": "problems"})
