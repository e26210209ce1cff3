"""Machine-to-machine webhooks skip the middleware that only browsers need.

An ESP posting tracking events has no session, language, CSRF token, user or firm, and reads
no HTML, so sessions, locale, CSRF, authentication, allauth, messages, the current firm,
X-Frame-Options and CSP only cost time on its posts (about half of a webhook request's time
outside the database). For the path prefixes in ``settings.WEBHOOK_PATHS`` this middleware
calls the view itself, inside the context manager the owning app names there (invoicing
stores all of a post's events with one INSERT when the view returns), and answers without
the rest of the stack. It sits after SecurityMiddleware, whose HTTPS redirect and headers
still apply.

Only views that opted out of CSRF protection (``csrf_exempt``, as anymail's are) take this
path: anything else, and any path that does not resolve, goes through the full stack as
before. An exception from the view still becomes Django's usual response (400 for a failed
signature check, 500 for an error, so the ESP retries), because Django wraps every
middleware in its exception handling.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, ResolverMatch, resolve
from django.utils.module_loading import import_string


class WebhookShortcutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # Path prefix -> a context manager factory (dotted path), or "" for none. The apps
        # above portal plug in here by name, so portal imports none of them.
        self.paths: list[tuple[str, Callable[[], Any] | None]] = [
            (prefix, import_string(scope) if scope else None)
            for prefix, scope in getattr(settings, "WEBHOOK_PATHS", {}).items()
        ]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for prefix, scope in self.paths:
            if request.path_info.startswith(prefix):
                return self._call_view(request, scope)
        return self.get_response(request)

    def _call_view(self, request: HttpRequest, scope: Callable[[], Any] | None) -> HttpResponse:
        try:
            match = _resolve(request.path_info, settings.ROOT_URLCONF)
        except Resolver404:
            return self.get_response(request)
        if not getattr(match.func, "csrf_exempt", False):
            return self.get_response(request)
        # CommonMiddleware, skipped here, is what checks ALLOWED_HOSTS for other requests:
        # a Host the site does not serve is refused (DisallowedHost, answered 400) here too.
        request.get_host()
        request.resolver_match = match
        with scope() if scope else contextlib.nullcontext():
            return match.func(request, *match.args, **match.kwargs)


@functools.lru_cache(maxsize=64)
def _resolve(path: str, urlconf: str) -> ResolverMatch:
    # Walking the whole URLconf to reach the webhooks (they come after every page and
    # allauth's URLs) took about 100 us per post. A webhook path names a fixed view, so the
    # answer is kept; only paths that resolved are kept (Resolver404 is not cached), at most
    # 64 of them.
    return resolve(path, urlconf)
