"""Limits on actions that reach out or check a secret, per member and per firm.

Without them a member (or a stolen session) could guess the shared mailbox's password
through the sending-server form, turn Test account into a scanner, or make the portal mail
anyone over and over. Each action has a budget per member and a larger one per firm in a
fixed window; both are counted on Django's cache (``CACHE_URL``: shared by every web worker
when it points at Redis; per process otherwise). Over budget, the view answers 429 with the
form as it was and `RateLimited.message`.

Budgets are ``RATE_LIMITS`` in the settings: ``{action: (per_member, per_firm, seconds)}``.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

__all__ = ["DEFAULT_LIMITS", "RateLimited", "hit", "limited_response"]

# action: (per member, per firm, window in seconds)
DEFAULT_LIMITS: dict[str, tuple[int, int, int]] = {
    # Typing a mailbox's password on the sending-server form: guessing it is the attack.
    "password_check": (5, 15, 15 * 60),
    # Test account (and saving, which tests first): connects to a server the member names.
    "account_test": (10, 30, 10 * 60),
    # "Send a test to myself" from the Problems page.
    "send_test": (5, 20, 60 * 60),
    # An invoice's test copy to the member.
    "invoice_test": (10, 30, 60 * 60),
    # Invitations mail an address the member types.
    "invitation": (20, 50, 60 * 60),
}


class RateLimited(Exception):
    """Over budget: ``scope`` is "member" or "firm"; ``retry_after`` in seconds."""

    def __init__(self, action: str, scope: str, retry_after: int) -> None:
        self.action = action
        self.scope = scope
        self.retry_after = retry_after
        super().__init__(f"{action}: {scope} over budget, retry after {retry_after}s")

    @property
    def message(self) -> str:
        minutes = max(1, -(-self.retry_after // 60))
        wait = ngettext(
            "Try again in %(minutes)d minute.", "Try again in %(minutes)d minutes.", minutes
        ) % {"minutes": minutes}
        if self.scope == "firm":
            return _("Your firm has tried this too many times in a short while.") + " " + wait
        return _("You have tried this too many times in a short while.") + " " + wait


def limited_response(request: HttpRequest, limited: RateLimited, back: str = "") -> HttpResponse:
    """The 429 page for a one-button action (no form to show again)."""
    response = render(
        request,
        "portal/rate_limited.html",
        {"message": limited.message, "back": back},
        status=429,
    )
    response["Retry-After"] = str(limited.retry_after)
    return response


def _limits(action: str) -> tuple[int, int, int]:
    configured = getattr(settings, "RATE_LIMITS", {}) or {}
    return tuple(configured.get(action, DEFAULT_LIMITS[action]))  # type: ignore[return-value]


def _count(key: str, window: int) -> int:
    # add() is a no-op when the key exists; incr() is atomic on Redis and memcached.
    cache.add(key, 0, timeout=window + 5)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window + 5)
        return 1


def hit(action: str, *, user_id: int, firm_id: int | None) -> None:
    """Count one attempt at ``action``; raise `RateLimited` when it is over budget.

    Attempts over budget are counted too, so hammering does not shorten the wait.
    """
    per_member, per_firm, window = _limits(action)
    now = int(time.time())
    slot = now // window
    retry_after = (slot + 1) * window - now
    member_count = _count(f"ratelimit:{action}:user:{user_id}:{slot}", window)
    firm_count = _count(f"ratelimit:{action}:firm:{firm_id}:{slot}", window) if firm_id else 0
    if member_count > per_member:
        raise RateLimited(action, "member", retry_after)
    if firm_id and firm_count > per_firm:
        raise RateLimited(action, "firm", retry_after)
