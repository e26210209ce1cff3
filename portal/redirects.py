"""Where a form goes back to after a POST: its ``next`` field, when that is a local path.

Every view that honours ``next`` goes through `redirect_next`. Django's ``redirect()``
treats a bare word such as ``x`` as a URL pattern name and fails with a server error when
none matches, and an absolute or scheme-relative URL would be an open redirect; so only a
path on this site (``/...``, not ``//host``) is followed, anything else falls back.
"""

from __future__ import annotations

import unicodedata

from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme

__all__ = ["local_path", "next_path", "redirect_next"]


def local_path(request: HttpRequest, target: str) -> str | None:
    """``target`` if it is a path on this site, else None."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in target):
        return None  # a line break or an invisible character has no business in a path
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    return target


def next_path(request: HttpRequest) -> str | None:
    """The posted ``next`` if it is a path on this site, else None."""
    return local_path(request, request.POST.get("next", ""))


def redirect_next(
    request: HttpRequest, fallback: str, *args: object, **kwargs: object
) -> HttpResponseRedirect:
    """Redirect to the posted ``next`` path, or to ``fallback`` (a URL name or path)."""
    target = next_path(request)
    return HttpResponseRedirect(target or resolve_url(fallback, *args, **kwargs))
