from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from accounts.models import AuditEntry, Role
from accounts.selectors import membership_for_request
from accounts.support import (
    FORBIDDEN_VIEWS,
    SESSION_GRANT_KEY,
    audit,
    support_exit,
    support_grant_for_session,
)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


class CurrentFirmMiddleware:
    """Put the firm the request acts for on the request: `firm`, `member_role`,
    `support_grant`.

    A member acts for their firm (the session may pick one of several). A support user
    with a session in a firm acts for that firm as an owner, but only while the firm's grant
    is valid: the grant is re-read on every request, so the first request after expiry or
    revocation is refused.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.support_grant = None
        _apply_user_language(request)
        if SESSION_GRANT_KEY in request.session:
            grant = support_grant_for_session(request)
            if grant is None:
                support_exit(request=request, grant=None, reason="ended")
                messages.warning(
                    request,
                    _(
                        "Your support session ended: the firm's editor access has expired "
                        "or was revoked."
                    ),
                )
                return redirect("accounts:support")
            request.support_grant = grant
            request.membership = None
            request.firm = grant.firm
            request.member_role = Role.OWNER
        else:
            membership = membership_for_request(request)
            request.membership = membership
            request.firm = membership.firm if membership else None
            request.member_role = membership.role if membership else None

        response = self.get_response(request)

        grant = request.support_grant
        if grant is not None and request.method not in SAFE_METHODS:
            refused = getattr(request, "support_refused", False)
            audit(
                firm=grant.firm,
                kind=AuditEntry.Kind.REFUSED if refused else AuditEntry.Kind.REQUEST,
                actor=request.user,
                grant=grant,
                request=request,
                status_code=response.status_code,
                object_ref=_object_ref(request),
            )
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        if request.support_grant is None:
            return None
        if request.resolver_match and request.resolver_match.view_name in FORBIDDEN_VIEWS:
            request.support_refused = True
            if request.method in SAFE_METHODS:
                audit(
                    firm=request.firm,
                    kind=AuditEntry.Kind.REFUSED,
                    actor=request.user,
                    grant=request.support_grant,
                    request=request,
                    status_code=403,
                )
            return render(request, "accounts/support_forbidden.html", status=403)
        return None


def _object_ref(request: HttpRequest) -> str:
    match = request.resolver_match
    if not match or not match.kwargs:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(match.kwargs.items()))


def _apply_user_language(request: HttpRequest) -> None:
    """Speak the user's saved language unless this browser chose one explicitly."""
    from django.conf import settings

    user = getattr(request, "user", None)
    if (
        user is not None
        and user.is_authenticated
        and user.language
        and settings.LANGUAGE_COOKIE_NAME not in request.COOKIES
    ):
        translation.activate(user.language)
        request.LANGUAGE_CODE = user.language


def support_banner_context(request: HttpRequest) -> dict[str, object]:
    grant = getattr(request, "support_grant", None)
    if grant is None:
        return {}
    return {
        "support_grant": grant,
        "support_until": date_format(timezone.localtime(grant.expires_at), "SHORT_DATETIME_FORMAT"),
    }
