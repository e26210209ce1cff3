"""Connect Gmail / Microsoft 365 through allauth (Sync Your Email → provider → consent).

The flow: `oauth_start` remembers what is being connected (whose mailbox, which provider) in
the session and sends the member to allauth's provider with ``process=connect``. allauth
links the social account to the member, stores its tokens and asks our adapter where to go
next (`MailboxSocialAccountAdapter.get_connect_redirect_url`), which notes the account and
answers `oauth_complete`. That view copies the tokens into the mailbox's encrypted secret,
deletes allauth's plaintext copy and checks the granted scopes.
"""

from __future__ import annotations

from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter, get_adapter
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialLogin, SocialToken
from allauth.socialaccount.providers.base.constants import AuthProcess
from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import Role
from mailsync import oauth, tasks
from mailsync.crypto import CredentialsUnavailable
from mailsync.errors import INSUFFICIENT_SCOPE
from mailsync.models import MailboxConnection
from portal.tenancy import member_required

SESSION_KEY = "mailsync_oauth"

# Where a member removes the portal's access, so that the next consent asks for every
# permission again (both providers remember an earlier, partial grant).
REVOKE_URLS = {
    MailboxConnection.Kind.GMAIL: "https://myaccount.google.com/permissions",
    MailboxConnection.Kind.MICROSOFT: "https://myapps.microsoft.com/",
}


class MailboxSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Social accounts only connect mailboxes; they never sign anybody in or up (sign-in is
    email + password + MFA, and a Google login must not bypass that)."""

    def list_providers(self, request: HttpRequest) -> list:
        # Hides "Sign in with Google/Microsoft" on allauth's pages; connecting still works
        # because allauth finds the provider through its app, not through this list.
        return []

    def get_app(self, request: HttpRequest | None, provider: str, client_id: str | None = None):
        try:
            return super().get_app(request, provider, client_id)
        except SocialApp.DoesNotExist:
            # A provider without credentials in the environment: its allauth pages are
            # "not found", not a server error. Without a request (a worker refreshing a
            # token) the caller gets the exception to classify.
            if request is None:
                raise
            raise Http404 from None

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        return False

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        if sociallogin.state.get("process") != AuthProcess.CONNECT:
            messages.error(
                request,
                _("Google and Microsoft accounts connect mailboxes; sign in with your email."),
            )
            raise ImmediateHttpResponse(redirect("account_login"))

    def get_connect_redirect_url(self, request: HttpRequest, socialaccount: SocialAccount) -> str:
        state = request.session.get(SESSION_KEY)
        if not state:
            # Connected from allauth's own page: nothing of ours to finish.
            return super().get_connect_redirect_url(request, socialaccount)
        if socialaccount.pk is None:
            # Refused (the account belongs to another user; allauth added its message).
            return reverse("mailsync:oauth_start")
        request.session[SESSION_KEY] = {**state, "account": socialaccount.pk}
        return reverse("mailsync:oauth_complete")


def _providers_available(request: HttpRequest) -> list[dict[str, str]]:
    """The OAuth providers with a configured app (no client id in the environment: none)."""
    available = []
    for kind, provider in oauth.PROVIDERS.items():
        if not get_adapter().list_apps(request, provider=provider.allauth_id):
            continue
        available.append({"kind": kind, "label": MailboxConnection.Kind(kind).label})
    return available


def _back(shared: bool) -> HttpResponse:
    return redirect("accounts:firm_profile" if shared else "accounts:my_account")


@member_required
@require_http_methods(["GET", "POST"])
def oauth_start(request: HttpRequest) -> HttpResponse:
    """Sync Your Email → Gmail or Microsoft: choose (GET), then go to the consent (POST)."""
    shared = (request.POST or request.GET).get("shared") == "1"
    if shared and request.member_role != Role.OWNER:
        return render(request, "portal/forbidden.html", status=403)
    available = _providers_available(request)
    if request.method == "POST":
        kind = request.POST.get("provider", "")
        if kind not in {item["kind"] for item in available}:
            messages.error(request, _("That provider is not available. Choose another."))
            return redirect(reverse("mailsync:oauth_start") + ("?shared=1" if shared else ""))
        request.session[SESSION_KEY] = {
            "kind": kind,
            "shared": shared,
            "firm": request.firm.pk,
        }
        provider = get_adapter().get_provider(request, oauth.PROVIDERS[kind].allauth_id)
        return provider.redirect(request, AuthProcess.CONNECT)
    return render(request, "mailsync/oauth_start.html", {"providers": available, "shared": shared})


@member_required
@require_GET
def oauth_complete(request: HttpRequest) -> HttpResponse:
    """allauth has linked the account: make (or re-authenticate) the mailbox from it."""
    state = request.session.pop(SESSION_KEY, None) or {}
    shared = bool(state.get("shared"))
    kind = state.get("kind")
    account = None
    if state.get("firm") == request.firm.pk and kind in oauth.PROVIDERS:
        account = SocialAccount.objects.filter(
            pk=state.get("account"),
            user=request.user,
            provider=oauth.PROVIDERS[kind].allauth_id,
        ).first()
    if account is None:
        messages.error(request, _("Nothing to finish here. Start again from Sync Your Email."))
        return _back(False)
    if shared and request.member_role != Role.OWNER:
        return render(request, "portal/forbidden.html", status=403)
    token = SocialToken.objects.filter(account=account).order_by("-pk").first()
    extra = account.extra_data or {}
    email = str(extra.get("email") or extra.get("mail") or extra.get("userPrincipalName") or "")
    if token is None or not token.token_secret:
        messages.error(
            request,
            _(
                "The provider did not allow offline access, so the portal cannot sync in the "
                "background. Remove the portal's access in your account and connect again."
            ),
        )
        return _back(shared)
    if not email:
        messages.error(request, _("The provider did not tell us the mailbox's address."))
        return _back(shared)
    tokens = oauth.OAuthSecret(
        access_token=token.token, refresh_token=token.token_secret, expires_at=token.expires_at
    )
    try:
        connection = oauth.connection_connect(
            firm=request.firm,
            owner=None if shared else request.user,
            kind=kind,
            email_address=email,
            tokens=tokens,
        )
    except CredentialsUnavailable as exc:
        messages.error(request, str(exc))
        return _back(shared)
    # The tokens now live encrypted on the mailbox (and rotate there); allauth's plaintext
    # copy would only go stale and widen what a database leak exposes.
    SocialToken.objects.filter(account=account).delete()
    problem = oauth.connection_check_grant(connection)
    if problem is not None and problem.code == INSUFFICIENT_SCOPE:
        missing = problem.detail.removeprefix("missing scopes: ")
        messages.error(
            request,
            _(
                "%(address)s was connected without every permission the portal needs "
                "(missing: %(scopes)s). Remove the portal's access at %(revoke_url)s, then "
                "connect again and allow every permission."
            )
            % {"address": email, "scopes": missing, "revoke_url": REVOKE_URLS[kind]},
        )
    elif problem is not None and not problem.transient:
        messages.error(
            request,
            _("%(address)s could not be connected: %(detail)s. Connect it again.")
            % {"address": email, "detail": problem.detail},
        )
    else:
        # Working, or the token endpoint was briefly unreachable: the sync retries.
        pk = connection.pk
        transaction.on_commit(lambda: tasks.sync_mailbox.delay(pk))
        messages.success(request, _("Mailbox connected. The first sync starts now."))
    return _back(shared)
