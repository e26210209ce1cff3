from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from accounts.support import is_support_user


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        # Support staff belong to no firm: where they sign in to is the list of firms that
        # let them in (not the "no firm" page the client list would show).
        if getattr(request, "firm", None) is None and is_support_user(request.user):
            return redirect("accounts:support")
        return redirect("portal:client_list")
    return redirect("account_login")


def bench_floor(request: HttpRequest) -> HttpResponse:
    """A bare view for bench/bench_pages.py (enabled by BENCH_FLOOR_VIEW only). It names
    the process that answered: the bench waits until every worker has."""
    response = HttpResponse("ok", content_type="text/plain")
    response["X-Worker"] = str(os.getpid())
    return response
