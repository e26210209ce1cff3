from __future__ import annotations

from collections.abc import Callable

from allauth.mfa.utils import is_mfa_enabled
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from accounts.models import AuditEntry, Role
from accounts.selectors import membership_for_request
from accounts.support import (
    SESSION_GRANT_KEY,
    audit,
    audit_support_request,
    support_exit,
    support_grant_for_session,
    support_may_use,
)


class CurrentFirmMiddleware:
    """Put the firm the request acts for on the request: `firm`, `member_role`,
    `support_grant`.

    A member acts for their firm (the session may pick one of several). A support user
    with a session in a firm acts for that firm as an owner, but only while the firm's grant
    is valid (the grant is re-read on every request, so the first request after expiry or
    revocation is refused), only on the views `accounts.support.SUPPORT_ALLOWED_VIEWS` lists,
    and every request of theirs is audited. An owner of a firm that requires MFA and who has
    none is sent to set it up before anything else.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.support_grant = None
        request.owner_needs_mfa = False
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
            request.owner_needs_mfa = bool(
                membership
                and membership.role == Role.OWNER
                and membership.firm.owners_need_mfa()
                and not is_mfa_enabled(request.user)
            )

        # Signing out replaces request.user with an anonymous one: keep who acted.
        actor = request.user
        grant = request.support_grant
        response = self.get_response(request)

        if grant is not None:
            signed_out = not request.user.is_authenticated
            if signed_out:
                audit(
                    firm=grant.firm,
                    kind=AuditEntry.Kind.SIGNED_OUT,
                    actor=actor,
                    grant=grant,
                    request=request,
                    status_code=response.status_code,
                )
            elif SESSION_GRANT_KEY in request.session:
                audit_support_request(
                    request=request,
                    grant=grant,
                    actor=actor,
                    status_code=response.status_code,
                    refused=getattr(request, "support_refused", False),
                    object_ref=_object_ref(request),
                )
            # Otherwise support left the firm: support_exit recorded it.
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        match = request.resolver_match
        view_name = match.view_name if match else None
        if request.support_grant is not None:
            if support_may_use(view_name):
                return None
            request.support_refused = True
            return render(request, "accounts/support_forbidden.html", status=403)
        if request.owner_needs_mfa and not _mfa_setup_may_use(view_name):
            messages.warning(
                request,
                _(
                    "Your firm requires two-factor authentication for owners. Set up an "
                    "authenticator app to continue."
                ),
            )
            return redirect("mfa_activate_totp")
        return None


def _mfa_setup_may_use(view_name: str | None) -> bool:
    """What an owner who must set up MFA can still open: MFA and own-account pages, sign out."""
    return bool(view_name) and (
        view_name.startswith(("mfa_", "account_")) or view_name == "set_language"
    )


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
        return _owner_banner_context(request)
    return {
        "support_grant": grant,
        "support_until": date_format(timezone.localtime(grant.expires_at), "SHORT_DATETIME_FORMAT"),
    }


def _owner_banner_context(request: HttpRequest) -> dict[str, object]:
    """An owner is told, on every page, while the support team may enter the firm."""
    firm = getattr(request, "firm", None)
    if firm is None or getattr(request, "member_role", None) != "owner":
        return {}
    until = firm.support_access_until
    if until is None or until <= timezone.now():
        return {}
    return {
        "editor_access_on": True,
        "editor_access_until": date_format(timezone.localtime(until), "SHORT_DATETIME_FORMAT"),
    }
