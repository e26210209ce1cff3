"""OAuth2 mailboxes (Gmail, Microsoft 365): tokens, refresh and the granted-scope check.

A Gmail or Microsoft connection's encrypted ``secret`` holds JSON (see `OAuthSecret`): the
access token, the refresh token, when the access token expires and the scopes the provider
says it granted. allauth only takes part in the consent (``process=connect``); afterwards the
tokens live here, encrypted, and allauth's own plaintext copy is deleted.

Why the scopes are learnt from a refresh and not from allauth: allauth keeps neither the token
response nor its ``scope``. And for Microsoft the token allauth receives is for Graph (it
reads the profile with it), so an IMAP token has to be obtained with the refresh token anyway.
Right after consent the callback therefore refreshes once: the answer's ``scope`` is what the
member really granted, and a missing mail scope becomes ``sync.insufficient_scope``.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from mailsync import crypto, services
from mailsync.errors import (
    AUTH_FAILED,
    CONNECTION,
    INSUFFICIENT_SCOPE,
    SERVER_SETTINGS,
    SyncError,
    clean_reply,
)
from mailsync.models import MailboxConnection
from portal.models import Firm

logger = logging.getLogger(__name__)

__all__ = [
    "PROVIDERS",
    "REFRESH_MARGIN",
    "OAuthProvider",
    "OAuthSecret",
    "access_token_for",
    "connection_check_grant",
    "connection_connect",
    "missing_scopes",
]

# Refresh this long before expiry, so a token never runs out in the middle of a sync's login.
REFRESH_MARGIN = datetime.timedelta(minutes=5)
# The token endpoint is called with a row lock held (see access_token_for): keep it short.
TOKEN_TIMEOUT = 20.0
STEP = "token_refresh"


@dataclass(frozen=True)
class OAuthProvider:
    kind: str  # MailboxConnection.Kind
    allauth_id: str  # allauth's provider id
    host: str
    port: int
    # The scopes without which IMAP cannot work; the check compares the grant with these.
    required_scopes: tuple[str, ...]
    # Settings name of the token endpoint URL (tests point it at a loopback server).
    endpoint_setting: str
    # Sent with the refresh: Microsoft issues a token for the resource of the scope asked
    # for, and we need the IMAP resource's (Google keeps the scope of the grant).
    refresh_scope: str = ""


MICROSOFT_IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
GOOGLE_MAIL_SCOPE = "https://mail.google.com/"

PROVIDERS: dict[str, OAuthProvider] = {
    MailboxConnection.Kind.GMAIL: OAuthProvider(
        kind=MailboxConnection.Kind.GMAIL,
        allauth_id="google",
        host="imap.gmail.com",
        port=993,
        required_scopes=(GOOGLE_MAIL_SCOPE,),
        endpoint_setting="MAILSYNC_GOOGLE_TOKEN_URL",
    ),
    MailboxConnection.Kind.MICROSOFT: OAuthProvider(
        kind=MailboxConnection.Kind.MICROSOFT,
        allauth_id="microsoft",
        host="outlook.office365.com",
        port=993,
        required_scopes=(MICROSOFT_IMAP_SCOPE,),
        endpoint_setting="MAILSYNC_MICROSOFT_TOKEN_URL",
        refresh_scope=f"{MICROSOFT_IMAP_SCOPE} offline_access",
    ),
}


@dataclass(frozen=True)
class OAuthSecret:
    """What a Gmail/Microsoft connection's encrypted secret holds. Never logged."""

    access_token: str
    refresh_token: str = ""
    expires_at: datetime.datetime | None = None
    # None: the provider has not said (RFC 6749 lets it omit an unchanged scope).
    scopes: tuple[str, ...] | None = None

    def __repr__(self) -> str:  # keep tokens out of logs and tracebacks
        return f"OAuthSecret(expires_at={self.expires_at!r}, scopes={self.scopes!r})"

    def dumps(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "scopes": list(self.scopes) if self.scopes is not None else None,
            }
        )

    @classmethod
    def loads(cls, text: str) -> OAuthSecret:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # Saved before tokens were kept as JSON: a bare access token, no refresh.
            return cls(access_token=text)
        expires = data.get("expires_at")
        scopes = data.get("scopes")
        return cls(
            access_token=data.get("access_token") or "",
            refresh_token=data.get("refresh_token") or "",
            expires_at=datetime.datetime.fromisoformat(expires) if expires else None,
            scopes=tuple(scopes) if scopes is not None else None,
        )

    def expiring(self, now: datetime.datetime) -> bool:
        # No known expiry but a refresh token: refresh rather than guess.
        if self.expires_at is None:
            return bool(self.refresh_token)
        return self.expires_at - now <= REFRESH_MARGIN


def missing_scopes(provider: OAuthProvider, granted: tuple[str, ...] | None) -> list[str]:
    """Required scopes not in ``granted`` (case-insensitive; Microsoft varies the case)."""
    if granted is None:
        return []
    have = {scope.lower() for scope in granted}
    return [scope for scope in provider.required_scopes if scope.lower() not in have]


def _client_credentials(provider: OAuthProvider) -> tuple[str, str]:
    # The same app allauth used for the consent (settings or database); the refresh token
    # is bound to it.
    from allauth.socialaccount.adapter import get_adapter
    from allauth.socialaccount.models import SocialApp

    try:
        app = get_adapter().get_app(None, provider=provider.allauth_id)
    except SocialApp.DoesNotExist as exc:
        raise SyncError(
            SERVER_SETTINGS,
            transient=False,
            detail=f"no OAuth client is configured for {provider.allauth_id}",
            step=STEP,
        ) from exc
    return app.client_id, app.secret


# Token endpoint errors (RFC 6749 §5.2, plus Microsoft's) → problem codes. invalid_grant is
# a revoked, expired or rotated-away refresh token: only the member can fix it.
_GRANT_ERRORS = {
    "invalid_grant": AUTH_FAILED,
    "interaction_required": AUTH_FAILED,
    "login_required": AUTH_FAILED,
    "invalid_scope": INSUFFICIENT_SCOPE,
    "consent_required": INSUFFICIENT_SCOPE,
    # Our client id/secret is wrong: an operator must fix the configuration.
    "invalid_client": SERVER_SETTINGS,
    "unauthorized_client": SERVER_SETTINGS,
}


def _refresh(provider: OAuthProvider, refresh_token: str) -> dict:
    """POST the refresh grant; the parsed answer, or a classified `SyncError`."""
    client_id, client_secret = _client_credentials(provider)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    if provider.refresh_scope:
        form["scope"] = provider.refresh_scope
    hide = (refresh_token, client_secret)
    try:
        response = requests.post(
            getattr(settings, provider.endpoint_setting),
            data=form,
            headers={"Accept": "application/json"},
            timeout=TOKEN_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise SyncError(
            CONNECTION, transient=True, detail=clean_reply(str(exc), hide), step=STEP
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SyncError(
            CONNECTION,
            transient=True,
            detail=clean_reply(f"HTTP {response.status_code} {response.text[:200]}", hide),
            step=STEP,
        )
    if response.ok and body.get("access_token"):
        return body
    error = str(body.get("error") or "")
    detail = clean_reply(
        f"HTTP {response.status_code} {error}: {body.get('error_description') or ''}", hide
    )
    code = _GRANT_ERRORS.get(error)
    if code is None or response.status_code >= 500 or response.status_code == 429:
        raise SyncError(CONNECTION, transient=True, detail=detail, step=STEP)
    if code == SERVER_SETTINGS:
        logger.error("OAuth client for %s refused: %s", provider.allauth_id, detail)
    raise SyncError(code, transient=False, detail=detail, step=STEP)


def _refreshed(old: OAuthSecret, answer: dict, now: datetime.datetime) -> OAuthSecret:
    expires_in = answer.get("expires_in")
    scope = answer.get("scope")
    return OAuthSecret(
        access_token=str(answer["access_token"]),
        # Rotation: a new refresh token replaces the old one (which may stop working);
        # without one in the answer, the old one stays valid.
        refresh_token=str(answer.get("refresh_token") or old.refresh_token),
        expires_at=now + datetime.timedelta(seconds=int(expires_in)) if expires_in else None,
        scopes=tuple(str(scope).split()) if scope else old.scopes,
    )


def access_token_for(connection: MailboxConnection, *, force: bool = False) -> str:
    """A valid access token for a Gmail/Microsoft connection, refreshed first if it expires
    within `REFRESH_MARGIN` (or ``force``), with a rotated refresh token saved.

    Raises `SyncError`: ``sync.auth_failed`` when the grant is gone (re-authentication
    needed), ``sync.insufficient_scope`` when the grant lacks a required scope, transient
    ``sync.connection`` when the token endpoint cannot be reached.
    """
    provider = PROVIDERS[connection.kind]
    with transaction.atomic():
        # The row lock serialises refreshes of one mailbox (a sync and a re-connect, say):
        # with rotation, a second refresh with the old refresh token could be refused and
        # a rotated token written by the loser would be lost.
        locked = (
            MailboxConnection.objects.select_for_update().only("pk", "secret").get(pk=connection.pk)
        )
        if not locked.secret:
            raise SyncError(AUTH_FAILED, transient=False, detail="no stored token", step=STEP)
        secret = OAuthSecret.loads(crypto.decrypt(locked.secret))
        now = timezone.now()
        if force or secret.expiring(now):
            if not secret.refresh_token:
                raise SyncError(
                    AUTH_FAILED,
                    transient=False,
                    detail="the access token expired and no refresh token was granted",
                    step=STEP,
                )
            secret = _refreshed(secret, _refresh(provider, secret.refresh_token), now)
            encrypted = crypto.encrypt(secret.dumps())
            MailboxConnection.objects.filter(pk=connection.pk).update(secret=encrypted)
            connection.secret = encrypted
    missing = missing_scopes(provider, secret.scopes)
    if missing:
        raise SyncError(
            INSUFFICIENT_SCOPE,
            transient=False,
            detail="missing scopes: " + " ".join(missing),
            step=STEP,
        )
    return secret.access_token


@transaction.atomic
def connection_connect(
    *,
    firm: Firm,
    owner: User | None,
    kind: str,
    email_address: str,
    tokens: OAuthSecret,
) -> MailboxConnection:
    """Save the tokens of a completed consent on the mailbox for this address.

    Connecting an address that is already there (including a stopped one) is its
    re-authentication: the same record, so folders and cursors stay and nothing is
    imported twice.
    """
    provider = PROVIDERS[kind]
    existing = (
        MailboxConnection.objects.select_for_update()
        .filter(
            firm=firm,
            owner=owner,
            kind=kind,
            email_address__iexact=email_address,
            intent__in=[MailboxConnection.Intent.ACTIVE, MailboxConnection.Intent.STOPPED],
        )
        .first()
    )
    if existing is not None:
        services.connection_reauthenticate(connection=existing, password=tokens.dumps())
        return existing
    return services.connection_create(
        firm=firm,
        owner=owner,
        kind=kind,
        email_address=email_address,
        host=provider.host,
        port=provider.port,
        security=MailboxConnection.Security.SSL,
        username=email_address,
        password=tokens.dumps(),
    )


def connection_check_grant(connection: MailboxConnection) -> SyncError | None:
    """Right after consent: refresh once to learn the granted scopes (see the module
    docstring) and record a problem on the connection. Returns the problem, if any."""
    try:
        access_token_for(connection, force=True)
    except SyncError as error:
        services.connection_record_failure(connection=connection, error=error)
        return error
    return None
