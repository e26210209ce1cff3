"""Gmail / Microsoft mailboxes: token refresh, rotation, the scope check and XOAUTH2 sync.

Everything runs against real loopback servers: the OAuth2 token endpoint of
tests/servers/oauth_server.py and the session's Dovecot, whose oauth2 passdb accepts exactly
the access tokens that endpoint issued (``on_issue`` registers them).

allauth's own redirect to Google/Microsoft and its code exchange need the internet, so the
callback tests start where allauth hands back a completed `SocialLogin` (process=connect):
they call allauth's `complete_social_login` with one built here, as its callback view would,
and follow allauth's redirect into our view.
"""

from __future__ import annotations

import datetime
import socket
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from allauth.core import context
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.helpers import complete_social_login
from allauth.socialaccount.models import SocialAccount, SocialLogin, SocialToken
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import Client as HttpClient
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from mailsync import crypto, services
from mailsync.engine import mailbox_sync
from mailsync.errors import AUTH_FAILED, CONNECTION, INSUFFICIENT_SCOPE, SyncError
from mailsync.models import MailboxConnection, MailboxFolder
from mailsync.oauth import (
    GOOGLE_MAIL_SCOPE,
    MICROSOFT_IMAP_SCOPE,
    OAuthSecret,
    access_token_for,
)
from tests.factories import UserFactory
from tests.mailsync.factories import MailboxConnectionFactory, fernet_key  # noqa: F401
from tests.servers import oauth_server as oauth_fixtures
from tests.servers.dovecot_fixtures import MailboxUser
from tests.servers.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthTokenServer

pytestmark = pytest.mark.django_db(transaction=False)

# The loopback token endpoint (session-wide) and the portal pointed at it (per test).
oauth_server = oauth_fixtures.oauth_server
oauth_token_endpoint = oauth_fixtures.oauth_token_endpoint

GMAIL_SCOPES = ("openid", "email", "profile", GOOGLE_MAIL_SCOPE)
EXPIRED = datetime.timedelta(minutes=-10)


def _secret(connection: MailboxConnection) -> OAuthSecret:
    connection.refresh_from_db()
    return OAuthSecret.loads(crypto.decrypt(connection.secret))


def _oauth_connection(
    *,
    kind: str = "gmail",
    refresh_token: str,
    expires_in: datetime.timedelta = EXPIRED,
    access_token: str = "at-expired",
    scopes: tuple[str, ...] | None = None,
    **fields: object,
) -> MailboxConnection:
    tokens = OAuthSecret(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=timezone.now() + expires_in,
        scopes=scopes,
    )
    return MailboxConnectionFactory(kind=kind, secret=crypto.encrypt(tokens.dumps()), **fields)


# --- the loopback token endpoint ----------------------------------------------------------


def test_the_token_endpoint_rotates_refresh_tokens_and_refuses_revoked_ones(
    oauth_token_endpoint: OAuthTokenServer,
):
    first = oauth_token_endpoint.issue("ann", scopes=GMAIL_SCOPES)
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    answer = requests.post(
        oauth_token_endpoint.token_url,
        data={**form, "grant_type": "refresh_token", "refresh_token": first},
        timeout=5,
    )
    body = answer.json()
    assert answer.status_code == 200
    assert body["scope"] == " ".join(GMAIL_SCOPES)
    assert body["refresh_token"] != first and body["expires_in"] == 3600
    assert not oauth_token_endpoint.is_valid(first)  # rotated away

    again = requests.post(
        oauth_token_endpoint.token_url,
        data={**form, "grant_type": "refresh_token", "refresh_token": first},
        timeout=5,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    wrong_client = requests.post(
        oauth_token_endpoint.token_url,
        data={"client_id": CLIENT_ID, "client_secret": "nope", "grant_type": "refresh_token"},
        timeout=5,
    )
    assert wrong_client.status_code == 401


# --- refresh -------------------------------------------------------------------------------


def test_a_refresh_saves_the_new_access_token_expiry_and_rotated_refresh_token(
    oauth_token_endpoint: OAuthTokenServer,
):
    refresh = oauth_token_endpoint.issue("ann", scopes=GMAIL_SCOPES)
    connection = _oauth_connection(refresh_token=refresh)

    token = access_token_for(connection)

    saved = _secret(connection)
    issued_token, _user = oauth_token_endpoint.issued[-1]
    assert token == saved.access_token == issued_token
    assert saved.refresh_token != refresh
    assert oauth_token_endpoint.is_valid(saved.refresh_token)
    assert saved.expires_at is not None
    assert saved.expires_at - timezone.now() > datetime.timedelta(minutes=55)
    assert saved.scopes == GMAIL_SCOPES
    sent = oauth_token_endpoint.requests[-1]
    assert sent["grant_type"] == "refresh_token" and sent["client_id"] == CLIENT_ID
    assert "scope" not in sent  # Google keeps the grant's scope


def test_the_old_refresh_token_is_kept_when_the_provider_does_not_rotate(
    oauth_token_endpoint: OAuthTokenServer,
):
    oauth_token_endpoint.state.rotate = False
    refresh = oauth_token_endpoint.issue("ann", scopes=GMAIL_SCOPES)
    connection = _oauth_connection(refresh_token=refresh)

    access_token_for(connection)

    assert _secret(connection).refresh_token == refresh


def test_a_token_valid_for_more_than_five_minutes_is_used_without_a_refresh(
    oauth_token_endpoint: OAuthTokenServer,
):
    refresh = oauth_token_endpoint.issue("ann", scopes=GMAIL_SCOPES)
    fresh = _oauth_connection(
        refresh_token=refresh,
        access_token="at-fresh",
        expires_in=datetime.timedelta(minutes=6),
        scopes=GMAIL_SCOPES,
    )
    assert access_token_for(fresh) == "at-fresh"
    assert oauth_token_endpoint.requests == []

    # Within the five-minute margin it is refreshed, so it cannot run out mid-login.
    expiring = _oauth_connection(
        refresh_token=refresh, access_token="at-soon", expires_in=datetime.timedelta(minutes=4)
    )
    assert access_token_for(expiring) != "at-soon"


def test_microsoft_refreshes_ask_for_the_imap_scope(oauth_token_endpoint: OAuthTokenServer):
    refresh = oauth_token_endpoint.issue("bob", scopes=(MICROSOFT_IMAP_SCOPE, "offline_access"))
    connection = _oauth_connection(kind="microsoft", refresh_token=refresh)

    access_token_for(connection)

    # The token allauth received is for Graph; the IMAP resource's comes from the refresh.
    assert MICROSOFT_IMAP_SCOPE in oauth_token_endpoint.requests[-1]["scope"].split()


def test_an_omitted_scope_in_the_answer_means_unchanged(oauth_token_endpoint: OAuthTokenServer):
    oauth_token_endpoint.state.omit_scope = True
    refresh = oauth_token_endpoint.issue("ann", scopes=("email",))
    connection = _oauth_connection(refresh_token=refresh, scopes=GMAIL_SCOPES)

    access_token_for(connection)  # RFC 6749 §5.1: no scope = as before; no problem raised

    assert _secret(connection).scopes == GMAIL_SCOPES


# --- sync over XOAUTH2 -----------------------------------------------------------------------


def _gmail_on_dovecot(mailbox_user: MailboxUser, refresh_token: str) -> MailboxConnection:
    server = mailbox_user.server
    connection = _oauth_connection(
        refresh_token=refresh_token,
        host=server.host,
        port=server.imap_port,
        security="none",
        username=mailbox_user.name,
        email_address=f"{mailbox_user.name}@gmail.test",
    )
    MailboxFolder.objects.create(connection=connection, name="INBOX", enabled=True)
    return connection


def test_an_expired_token_is_refreshed_before_the_sync_and_xoauth2_login_succeeds(
    oauth_token_endpoint: OAuthTokenServer, mailbox_user: MailboxUser
):
    server = mailbox_user.server
    # Dovecot accepts only tokens the endpoint issues: the stored, expired one is unknown.
    oauth_token_endpoint.state.on_issue = lambda token, user: server.add_oauth_token(user, token)
    server.append(
        mailbox_user.name,
        b"From: client@client.test\r\nTo: me@gmail.test\r\nSubject: Over XOAUTH2\r\n"
        b"Message-ID: <xoauth2-1@client.test>\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
        b"\r\nHello.\r\n",
    )
    refresh = oauth_token_endpoint.issue(mailbox_user.name, scopes=GMAIL_SCOPES)
    connection = _gmail_on_dovecot(mailbox_user, refresh)

    report = mailbox_sync(connection)

    assert report.problems == []
    assert report.new == 1
    connection.refresh_from_db()
    assert connection.health == MailboxConnection.Health.OK
    assert connection.last_success_at is not None
    saved = _secret(connection)
    assert (saved.access_token, mailbox_user.name) in oauth_token_endpoint.issued
    assert saved.refresh_token != refresh and oauth_token_endpoint.is_valid(saved.refresh_token)


def test_a_revoked_grant_needs_reauthentication_and_stops_retries(
    oauth_token_endpoint: OAuthTokenServer, mailbox_user: MailboxUser
):
    refresh = oauth_token_endpoint.issue(mailbox_user.name, scopes=GMAIL_SCOPES)
    oauth_token_endpoint.revoke(refresh)  # the member removed the portal's access
    connection = _gmail_on_dovecot(mailbox_user, refresh)

    report = mailbox_sync(connection)

    connection.refresh_from_db()
    assert report.errors == 1
    assert connection.health == MailboxConnection.Health.NEEDS_REAUTH
    assert connection.problem_code == AUTH_FAILED
    assert connection.problem_step == "token_refresh"
    assert "invalid_grant" in connection.problem_detail
    assert refresh not in connection.problem_detail
    assert connection.next_attempt_at is None
    assert connection.pk not in services.connections_due()


def test_a_grant_without_the_mail_scope_needs_permissions(
    oauth_token_endpoint: OAuthTokenServer, mailbox_user: MailboxUser
):
    refresh = oauth_token_endpoint.issue(mailbox_user.name, scopes=("openid", "email"))
    connection = _gmail_on_dovecot(mailbox_user, refresh)

    mailbox_sync(connection)

    connection.refresh_from_db()
    assert connection.health == MailboxConnection.Health.NEEDS_PERMISSIONS
    assert connection.problem_code == INSUFFICIENT_SCOPE
    assert GOOGLE_MAIL_SCOPE in connection.problem_detail
    assert connection.next_attempt_at is None
    # The refresh itself succeeded: its rotated refresh token is not lost.
    assert oauth_token_endpoint.is_valid(_secret(connection).refresh_token)


def test_an_unreachable_token_endpoint_is_transient(oauth_token_endpoint, settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings.MAILSYNC_GOOGLE_TOKEN_URL = f"http://127.0.0.1:{closed}/token"
    connection = _oauth_connection(refresh_token="rt-any")

    with pytest.raises(SyncError) as failed:
        access_token_for(connection)

    assert failed.value.code == CONNECTION and failed.value.transient
    assert "rt-any" not in str(failed.value)


# --- the connect flow (from allauth's hand-off) ---------------------------------------------


def _allauth_hands_back(
    http: HttpClient,
    user,
    *,
    provider: str,
    uid: str,
    extra_data: dict,
    access_token: str,
    refresh_token: str,
    process: str = "connect",
):
    """What allauth's callback view does once the provider returned a code and allauth
    exchanged it: complete the social login (here built by hand) in the member's session."""
    request = RequestFactory().get(f"/accounts/{provider}/login/callback/")
    request.user = user
    request.session = http.session
    request._messages = FallbackStorage(request)
    with context.request_context(request):
        # As allauth's OAuth2 callback does: the provider turns its profile answer into a
        # SocialLogin, the token from the code exchange is attached, the state restored.
        sociallogin: SocialLogin = (
            get_adapter()
            .get_provider(request, provider)
            .sociallogin_from_response(request, {"id": uid, "sub": uid, **extra_data})
        )
        sociallogin.token = SocialToken(
            token=access_token,
            token_secret=refresh_token,
            expires_at=timezone.now() + datetime.timedelta(hours=1),
        )
        sociallogin.state = {"process": process}
        response = complete_social_login(request, sociallogin)
    request.session.save()
    return response


def _start(http: HttpClient, provider: str, **extra: str):
    return http.post(reverse("mailsync:oauth_start"), {"provider": provider, **extra})


def test_starting_gmail_sends_the_member_to_googles_offline_consent(
    owner_client, oauth_token_endpoint
):
    response = _start(owner_client, "gmail")

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.netloc == "accounts.google.com"
    query = parse_qs(location.query)
    assert GOOGLE_MAIL_SCOPE in query["scope"][0].split()
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["client_id"] == [CLIENT_ID]


def test_the_wizard_offers_only_configured_providers(owner_client, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        name: {**config, "APPS": []} for name, config in settings.SOCIALACCOUNT_PROVIDERS.items()
    }
    page = owner_client.get(reverse("mailsync:oauth_start")).content.decode()
    assert "Connect with Gmail" not in page
    assert _start(owner_client, "gmail").status_code == 302
    assert not MailboxConnection.objects.exists()


def test_a_completed_consent_creates_the_gmail_mailbox_with_its_tokens(
    owner_client, owner, oauth_token_endpoint, django_capture_on_commit_callbacks, monkeypatch
):
    queued: list[int] = []
    monkeypatch.setattr("mailsync.tasks.sync_mailbox.delay", queued.append)
    refresh = oauth_token_endpoint.issue("ann@gmail.test", scopes=GMAIL_SCOPES)
    _start(owner_client, "gmail")

    handed_back = _allauth_hands_back(
        owner_client,
        owner.user,
        provider="google",
        uid="google-uid-1",
        extra_data={"email": "ann@gmail.test", "email_verified": True},
        access_token="at-from-consent",
        refresh_token=refresh,
    )
    assert handed_back["Location"] == reverse("mailsync:oauth_complete")
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.get(handed_back["Location"])

    assert response["Location"] == reverse("accounts:my_account")
    connection = MailboxConnection.objects.get()
    assert connection.owner == owner.user and connection.firm == owner.firm
    assert connection.kind == "gmail" and connection.email_address == "ann@gmail.test"
    assert (connection.host, connection.port, connection.security) == ("imap.gmail.com", 993, "ssl")
    assert connection.username == "ann@gmail.test"
    assert connection.health == MailboxConnection.Health.OK
    saved = _secret(connection)
    assert saved.scopes == GMAIL_SCOPES
    assert saved.refresh_token != refresh and oauth_token_endpoint.is_valid(saved.refresh_token)
    # allauth's plaintext copy is gone; the account link stays.
    assert not SocialToken.objects.exists()
    assert SocialAccount.objects.get().user == owner.user
    assert connection.folders.filter(name="INBOX", enabled=True).exists()
    assert queued == [connection.pk]
    assert "Mailbox connected" in " ".join(str(m) for m in get_messages(response.wsgi_request))


def test_a_consent_without_the_imap_permission_asks_to_connect_again(
    owner_client, owner, oauth_token_endpoint, monkeypatch
):
    monkeypatch.setattr("mailsync.tasks.sync_mailbox.delay", lambda pk: None)
    refresh = oauth_token_endpoint.issue("bob@contoso.test", scopes=("User.Read", "openid"))
    _start(owner_client, "microsoft")

    handed_back = _allauth_hands_back(
        owner_client,
        owner.user,
        provider="microsoft",
        uid="ms-uid-1",
        extra_data={"id": "ms-uid-1", "mail": "bob@contoso.test"},
        access_token="graph-token",
        refresh_token=refresh,
    )
    response = owner_client.get(handed_back["Location"], follow=True)

    connection = MailboxConnection.objects.get()
    assert connection.kind == "microsoft" and connection.host == "outlook.office365.com"
    assert connection.health == MailboxConnection.Health.NEEDS_PERMISSIONS
    assert connection.problem_code == INSUFFICIENT_SCOPE
    assert MICROSOFT_IMAP_SCOPE in connection.problem_detail
    page = response.content.decode()
    assert "without every permission" in page and "IMAP.AccessAsUser.All" in page
    assert "allow every permission" in page


def test_connecting_the_same_address_again_reauthenticates_the_same_mailbox(
    owner_client, owner, oauth_token_endpoint, monkeypatch
):
    monkeypatch.setattr("mailsync.tasks.sync_mailbox.delay", lambda pk: None)
    existing = _oauth_connection(
        refresh_token="rt-revoked",
        firm=owner.firm,
        owner=owner.user,
        email_address="ann@gmail.test",
        health=MailboxConnection.Health.NEEDS_REAUTH,
        problem_code=AUTH_FAILED,
    )
    refresh = oauth_token_endpoint.issue("ann@gmail.test", scopes=GMAIL_SCOPES)
    _start(owner_client, "gmail")
    handed_back = _allauth_hands_back(
        owner_client,
        owner.user,
        provider="google",
        uid="google-uid-2",
        extra_data={"email": "Ann@gmail.test"},
        access_token="at-2",
        refresh_token=refresh,
    )
    owner_client.get(handed_back["Location"])

    assert MailboxConnection.objects.get().pk == existing.pk
    existing.refresh_from_db()
    assert existing.health == MailboxConnection.Health.OK and existing.problem_code == ""
    assert _secret(existing).refresh_token != "rt-revoked"


def test_the_shared_mailbox_is_for_owners_only(staff_client, oauth_token_endpoint):
    assert _start(staff_client, "gmail", shared="1").status_code == 403


def test_google_cannot_be_used_to_sign_in(oauth_token_endpoint):
    http = HttpClient()
    http.get("/")  # a session
    response = _allauth_hands_back(
        http,
        UserFactory(),
        provider="google",
        uid="google-uid-3",
        extra_data={"email": "someone@gmail.test"},
        access_token="at",
        refresh_token="rt",
        process="login",
    )
    assert response["Location"] == reverse("account_login")
    assert not SocialAccount.objects.exists()


def test_the_finish_page_without_a_consent_does_nothing(owner_client):
    response = owner_client.get(reverse("mailsync:oauth_complete"))
    assert response.status_code == 302
    assert not MailboxConnection.objects.exists()
