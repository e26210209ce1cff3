"""Every URL, requested by a member of another firm and by nobody, leaks and changes nothing.

The walk covers every pattern the URLconf has. A new URL whose parameters this file does not
know fails `test_it_knows_how_to_fill_every_url_parameter`, so isolation is decided for each
new page instead of silently skipped.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import Invitation, Membership, Role, SupportGrant, hash_token
from invoicing.delivery.models import Delivery, Suppression
from invoicing.models import Invoice, InvoiceLine, PayLink, Payment
from mailsync.models import (
    IgnoredAddress,
    MailboxConnection,
    MailboxFolder,
    Message,
    WrittenEmail,
)
from portal.models import Client, Contact, ContactAddress, Document, OutboxEmail
from tests.factories import (
    ClientFactory,
    ContactAddressFactory,
    ContactFactory,
    DocumentFactory,
    FirmFactory,
    MembershipFactory,
    UserFactory,
)
from tests.mailsync.factories import MessageClientLinkFactory

# Pages that hold no firm's data: sign-in, sign-up and own-account pages of allauth, the
# language switch, and Django's admin (staff only; its own test checks members are refused).
# anymail's ESP webhooks hold no firm's pages either: they are authenticated by the webhook
# secret (and the ESP's signature), not by firm membership, and only store events;
# tests/invoicing/test_webhooks.py covers their authentication.
EXEMPT_NAMESPACES = {"admin", "anymail"}
EXEMPT_NAME_PREFIXES = ("account_", "mfa_", "socialaccount_", "set_language")
# Stripe's webhook likewise holds no firm's pages: it is authenticated by Stripe's signature
# with STRIPE_WEBHOOK_SECRET, not by membership; tests/invoicing/test_stripe.py covers it.
EXEMPT_NAMES = {None, "stripe_webhook"}  # and allauth's unnamed roots and callback patterns
# allauth's per-provider pages ("google_login", "google_callback", ..., without the
# socialaccount_ prefix) hold no firm's data either: they only run the consent that connects a
# mailbox; tests/mailsync/test_oauth.py covers what happens after it.
EXEMPT_NAMES |= {
    f"{provider}_{page}"
    for provider in ("google", "microsoft")
    for page in ("login", "callback", "login_by_token")
}
# Public pages about the platform as a whole, which hold no firm's data by construction.
PLATFORM_PAGES = {"troubleshooting:status"}
# Pages reached by a link's own token, without signing in; walked with a token nobody holds.
PUBLIC_NAMES = {
    "accounts:invitation_accept",
    "invoicing:pay",
    "invoicing:stripe_checkout",
    "invoicing:pay_link_request",
    # A synced message's inline image, fetched by its sandboxed frame without the session
    # cookie: the signed token minted for a member who opened the message is its credential;
    # tests/mailsync/test_message_page.py covers the real one.
    "mailsync:message_inline",
}

SECRETS = [
    "Firm A Confidential",
    "SECRET-CLIENT-A",
    "Secret Contact A",
    "secret.address@a-client.test",
    "secret-doc-a.pdf",
    "SECRET-MAIL-A",
    "owner-a@firm-a.test",
    "SECRET-DOC-CONTENT-A",
    "SECRET-INVOICE-LINE-A",
    "secret.blocked@a-client.test",
    "SECRET-SYNCED-SUBJECT-A",
    "SECRET-SYNCED-TEXT-A",
    "secret-mailbox-a@firm-a.test",
    "SECRET-WRITTEN-SUBJECT-A",
    "SECRET-WRITTEN-BODY-A",
]


@dataclass
class FirmA:
    client: Client
    contact: Contact
    address: ContactAddress
    document: Document
    owner: Membership
    invitation: Invitation
    invitation_token: str
    outbox_email: OutboxEmail
    grant: SupportGrant
    invoice: Invoice
    delivery: Delivery
    suppression: Suppression
    connection: MailboxConnection | None = None


@pytest.fixture
def firm_a(db) -> FirmA:
    firm = FirmFactory(name="Firm A Confidential")
    owner = MembershipFactory(firm=firm, role=Role.OWNER, user__email="owner-a@firm-a.test")
    client = ClientFactory(firm=firm, display_name="SECRET-CLIENT-A")
    contact = ContactFactory(client=client, name="Secret Contact A")
    address = ContactAddressFactory(contact=contact, address="secret.address@a-client.test")
    document = DocumentFactory(
        client=client,
        original_name="secret-doc-a.pdf",
        file=ContentFile(b"SECRET-DOC-CONTENT-A", name="secret-doc-a.pdf"),
    )
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        firm=firm,
        email="invitee-a@firm-a.test",
        role=Role.STAFF,
        token_hash=hash_token(token),
        invited_by=owner.user,
        expires_at=timezone.now() + timezone.timedelta(days=3),
    )
    outbox_email = OutboxEmail.objects.create(
        firm=firm, subject="SECRET-MAIL-A", from_email="x@y.test", recipients="z@y.test", raw=b""
    )
    grant = SupportGrant.objects.create(
        firm=firm, granted_by=owner.user, expires_at=timezone.now() + timezone.timedelta(days=3)
    )
    invoice = Invoice.objects.create(
        firm=firm, client=client, number=1, due_date=timezone.localdate(), status="sent"
    )
    InvoiceLine.objects.create(
        invoice=invoice, description="SECRET-INVOICE-LINE-A", unit_price="10.00"
    )
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=invoice,
        client=client,
        address=address.address,
        normalized=address.normalized,
        status="bounced",
        problem_code="delivery.hard_bounce",
        verp_token=secrets.token_hex(16),
    )
    suppression = Suppression.objects.create(
        firm=firm, normalized="secret.blocked@a-client.test", reason="hard_bounce"
    )
    # A member's synced mailbox and a message on the client (no credentials: nothing
    # connects to the server here).
    connection = MailboxConnection.objects.create(
        firm=firm,
        owner=owner.user,
        kind="imap",
        email_address="secret-mailbox-a@firm-a.test",
        host="127.0.0.1",
        port=143,
        security="none",
        username="secret-mailbox-a@firm-a.test",
    )
    message = Message.objects.create(
        firm=firm,
        key="a" * 64,
        subject="SECRET-SYNCED-SUBJECT-A",
        text_body="SECRET-SYNCED-TEXT-A",
        thread_key="a",
        raw=b"",
    )
    MessageClientLinkFactory(message=message, client=client)
    return FirmA(
        client,
        contact,
        address,
        document,
        owner,
        invitation,
        token,
        outbox_email,
        grant,
        invoice,
        delivery,
        suppression,
        connection,
    )


PARAMETERS = {
    "client_pk": lambda a: a.client.pk,
    "contact_pk": lambda a: a.contact.pk,
    "address_pk": lambda a: a.address.pk,
    "document_pk": lambda a: a.document.pk,
    "membership_pk": lambda a: a.owner.pk,
    "invitation_pk": lambda a: a.invitation.pk,
    "email_pk": lambda a: a.outbox_email.pk,
    "grant_pk": lambda a: a.grant.pk,
    "connection_pk": lambda a: a.connection.pk,
    "invoice_pk": lambda a: a.invoice.pk,
    "delivery_pk": lambda a: a.delivery.pk,
    "suppression_pk": lambda a: a.suppression.pk,
    # An address firm A chose to ignore on its unlinked-mail page.
    "ignored_pk": lambda a: (
        IgnoredAddress.objects.get_or_create(
            firm=a.client.firm, normalized="secret.newsletter@a-client.test"
        )[0].pk
    ),
    # A folder of firm A's mailbox (Re-check this folder, after a silent gap).
    "folder_pk": lambda a: (
        MailboxFolder.objects.get_or_create(connection=a.connection, name="INBOX")[0].pk
    ),
    # An email firm A's owner wrote to its client (where Send leads: its outcome).
    "written_pk": lambda a: (
        WrittenEmail.objects.get_or_create(
            firm=a.client.firm,
            client=a.client,
            member=a.owner.user,
            submission_key="firm-a",
            defaults={
                "recipients": ["secret.address@a-client.test"],
                "subject": "SECRET-WRITTEN-SUBJECT-A",
                "body": "SECRET-WRITTEN-BODY-A",
                "status": WrittenEmail.Status.FAILED,
            },
        )[0].pk
    ),
    # Firm A's synced message on its client (Reply on the client's Email tab).
    "message_pk": lambda a: Message.objects.get(firm=a.client.firm).pk,
    # An invitation link's token is its own credential: whoever holds it may join. The walk
    # uses a token nobody was sent; tests/accounts/test_invitations.py covers the real one.
    # The same holds for Pay Now links and their card checkout (tests/invoicing/test_pay_now.py,
    # tests/invoicing/test_stripe.py).
    "token": lambda a: secrets.token_urlsafe(32),
}


def _walk(patterns, prefix="", namespace=None):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            yield namespace, entry.name, prefix + str(entry.pattern), entry.pattern.converters


def _is_exempt(namespace: str | None, name: str | None) -> bool:
    if namespace in EXEMPT_NAMESPACES or name in EXEMPT_NAMES:
        return True
    return bool(name and name.startswith(EXEMPT_NAME_PREFIXES))


def _firm_patterns():
    seen = set()
    for namespace, name, route, converters in _walk(get_resolver().url_patterns):
        if _is_exempt(namespace, name):
            continue
        full = f"{namespace}:{name}" if namespace else name
        if full not in seen and full not in PLATFORM_PAGES:
            seen.add(full)
            yield full, route, tuple(converters)


FIRM_PATTERNS = sorted(_firm_patterns())


def test_it_walks_a_meaningful_number_of_urls():
    assert len(FIRM_PATTERNS) >= 25


@pytest.mark.parametrize(
    ("name", "route", "params"), FIRM_PATTERNS, ids=[p[0] for p in FIRM_PATTERNS]
)
def test_it_knows_how_to_fill_every_url_parameter(name, route, params):
    unknown = [p for p in params if p not in PARAMETERS]
    assert not unknown, f"{name} ({route}) has parameters the isolation walk cannot fill: {unknown}"


def _snapshot(firm_a: FirmA) -> dict[str, list]:
    """Everything of firm A a request could change (the outsider may change their own firm)."""
    firm = firm_a.client.firm
    return {
        "clients": list(
            Client.objects.filter(firm=firm).values_list("pk", "display_name", "status", "kind")
        ),
        "contacts": list(
            Contact.objects.filter(client__firm=firm).values_list("pk", "name", "client_id")
        ),
        "addresses": list(
            ContactAddress.objects.filter(firm=firm).values_list(
                "pk", "address", "is_primary", "receives_invoices"
            )
        ),
        "documents": list(
            Document.objects.filter(client__firm=firm).values_list("pk", "original_name")
        ),
        "memberships": list(
            Membership.objects.filter(firm=firm).values_list("pk", "user_id", "role")
        ),
        "grants": list(
            SupportGrant.objects.filter(firm=firm).values_list("pk", "expires_at", "revoked_at")
        ),
        "mailboxes": list(
            MailboxConnection.objects.filter(firm=firm).values_list(
                "pk", "intent", "health", "secret", "next_attempt_at"
            )
        ),
        "invitations": list(
            Invitation.objects.filter(firm=firm).values_list(
                "pk", "email", "accepted_at", "revoked_at"
            )
        ),
        "invoices": list(
            Invoice.objects.filter(firm=firm).values_list("pk", "status", "client_id", "notes")
        ),
        "lines": list(
            InvoiceLine.objects.filter(invoice__firm=firm).values_list("pk", "description")
        ),
        "deliveries": list(
            Delivery.objects.filter(firm=firm).values_list("pk", "status", "problem_code")
        ),
        "pay_links": list(
            PayLink.objects.filter(invoice__firm=firm).values_list("pk", "revoked_at")
        ),
        "payments": list(Payment.objects.filter(invoice__firm=firm).values_list("pk")),
        "suppressions": list(Suppression.objects.filter(firm=firm).values_list("pk", "removed_at")),
    }


def _body(response) -> str:
    """The headers and the body: a download's file name travels in a header."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)
    else:
        content = response.content
    return headers + "\n\n" + content.decode(errors="replace")


def _payload() -> dict:
    return {
        "display_name": "Hijacked",
        "kind": "company",
        "status": "archived",
        "name": "Hijacked",
        "addresses": "attacker@evil.test",
        "address": "attacker@evil.test",
        "is_primary": "on",
        "receives_invoices": "on",
        "email": "attacker@evil.test",
        "role": "owner",
        "first_name": "Eve",
        "last_name": "Attacker",
        "password": "a-long-enough-password-123",
        "file": SimpleUploadedFile("evil.txt", b"evil"),
    }


def _requests_as(http: HttpClient, firm_a: FirmA) -> list[tuple[str, str, int, str]]:
    seen = []
    for name, _route, params in FIRM_PATTERNS:
        kwargs = {p: PARAMETERS[p](firm_a) for p in params}
        url = reverse(name, kwargs=kwargs)
        for method in ("get", "post"):
            data = _payload() if method == "post" else None
            response = getattr(http, method)(url, data=data)
            seen.append((name, method, response.status_code, _body(response)))
    return seen


def _assert_nothing_leaked(results, *, allowed_statuses):
    for name, method, status, body in results:
        for secret in SECRETS:
            assert secret not in body, f"{method.upper()} {name} showed {secret!r}"
        assert status in allowed_statuses, f"{method.upper()} {name} answered {status}"


def test_a_member_of_another_firm_sees_and_changes_nothing(firm_a, outsider_client):
    before = _snapshot(firm_a)
    results = _requests_as(outsider_client, firm_a)
    # 200 only for pages of the outsider's own firm (their client list, settings, outbox).
    _assert_nothing_leaked(results, allowed_statuses={200, 302, 400, 403, 404, 405, 410})
    assert _snapshot(firm_a) == before


def test_an_anonymous_visitor_sees_and_changes_nothing(firm_a):
    before = _snapshot(firm_a)
    results = _requests_as(HttpClient(), firm_a)
    _assert_nothing_leaked(results, allowed_statuses={200, 302, 400, 403, 404, 405, 410})
    for name, method, status, _body_text in results:
        if name not in PUBLIC_NAMES:
            assert status in (302, 405), f"{method.upper()} {name} answered {status} to nobody"
    assert _snapshot(firm_a) == before


def test_a_staff_user_outside_the_support_team_sees_and_changes_nothing(firm_a, db):
    """Being `is_staff` is not enough to enter a firm: only the support team may, by grant."""
    staff_user = UserFactory(email="ops@platform.test", is_staff=True)
    http = HttpClient()
    http.force_login(staff_user)
    before = _snapshot(firm_a)
    results = _requests_as(http, firm_a)
    _assert_nothing_leaked(results, allowed_statuses={200, 302, 400, 403, 404, 405, 410})
    assert _snapshot(firm_a) == before


def test_members_who_are_not_staff_cannot_open_the_admin(owner_client):
    response = owner_client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
