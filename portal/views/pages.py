from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("portal:client_list")
    return redirect("account_login")


def bench_floor(request: HttpRequest) -> HttpResponse:
    """A bare view for bench/bench_pages.py (enabled by BENCH_FLOOR_VIEW only)."""
    return HttpResponse("ok", content_type="text/plain")
