"""Pay Now links: one per delivered email, opening the invoice's page without a login.

A link's token is 256 random bits, only its SHA-256 is stored (`PayLink.token_hash`). The
sender issues every link of a group in its claim, before the email leaves
(`pay_links_issue`, called from `invoicing.delivery.sender`), so a link in a client's
inbox always works; a resend, a void or a new send revokes the older ones. Opening one
records the invoice as viewed and the delivery as clicked (`pay_link_viewed`); a client
with a dead link can ask for a new one (`invoicing.payments.link_requests`). Paying from
the page is `invoicing.payments`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import AuditEntry, User
from invoicing.delivery.events import delivery_event_record
from invoicing.delivery.models import Delivery
from invoicing.models import Invoice, PayLink

S = Delivery.Status


def pay_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pay_link_create(*, delivery: Delivery) -> str:
    """A fresh link for this delivery; returns the token, which is stored only hashed."""
    token = secrets.token_urlsafe(32)  # 256 bits
    PayLink.objects.update_or_create(
        delivery=delivery,
        defaults={
            "invoice_id": delivery.invoice_id,
            "token_hash": pay_token_hash(token),
            "expires_at": timezone.now() + timedelta(days=settings.PAY_LINK_DAYS),
            "revoked_at": None,
        },
    )
    return token


def pay_links_issue(*, deliveries: Sequence[Delivery], now: datetime) -> dict[int, str]:
    """A fresh link for each delivery a sender just claimed, in one statement; returns
    delivery id -> token. The hash is stored before the email leaves, so a link in a
    client's inbox always works; the token itself is only ever in the email."""
    tokens = {d.pk: secrets.token_urlsafe(32) for d in deliveries}  # 256 bits each
    expires = now + timedelta(days=settings.PAY_LINK_DAYS)
    # A queued delivery normally has no link; one left by an attempt that never sent
    # (connection lost) is replaced in the same statement.
    PayLink.objects.bulk_create(
        [
            PayLink(
                delivery=d,
                invoice_id=d.invoice_id,
                token_hash=pay_token_hash(tokens[d.pk]),
                expires_at=expires,
            )
            for d in deliveries
        ],
        update_conflicts=True,
        unique_fields=["delivery"],
        update_fields=["invoice", "token_hash", "expires_at", "revoked_at"],
    )
    return tokens


def pay_link_revoke(*, delivery: Delivery, actor: User, request: HttpRequest | None = None) -> bool:
    """Stop the Pay Now link of this email from opening the invoice (a link forwarded to
    the wrong person, a wrong amount). The client who opens it is told it is no longer
    valid and may ask for a new one. Audited; returns False when it was revoked already."""
    from accounts.support import audit

    revoked = PayLink.objects.filter(delivery=delivery, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    if revoked:
        audit(
            firm=delivery.firm,
            kind=AuditEntry.Kind.PAY_LINK_REVOKED,
            actor=actor,
            grant=getattr(request, "support_grant", None) if request else None,
            request=request,
            status_code=302,
            object_ref=f"invoice #{delivery.invoice.number} → {delivery.address}",
        )
    return bool(revoked)


def pay_link_find(*, token: str) -> PayLink | None:
    if not token or len(token) > 128:
        return None
    return (
        PayLink.objects.select_related("invoice__firm", "invoice__client", "delivery")
        .filter(token_hash=pay_token_hash(token))
        .first()
    )


def pay_link_viewed(*, link: PayLink) -> None:
    """The client opened the page: remember when, and move a sent invoice to viewed."""
    now = timezone.now()
    first_view = link.last_viewed_at is None
    PayLink.objects.filter(pk=link.pk).update(last_viewed_at=now)
    link.last_viewed_at = now
    invoice = link.invoice
    if invoice.status == Invoice.Status.SENT:
        Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.SENT).update(
            status=Invoice.Status.VIEWED
        )
        invoice.status = Invoice.Status.VIEWED
    if first_view and link.delivery is not None and not link.delivery.is_test:
        # Opening the link proves the email arrived, whatever the ESP said about opens.
        delivery_event_record(delivery=link.delivery, kind=S.CLICKED, source="portal")


def pay_links_revoke(*, invoice: Invoice, normalized: Sequence[str]) -> None:
    """A resend renews the link: the one in the earlier email to these addresses stops
    working."""
    PayLink.objects.filter(
        invoice=invoice,
        revoked_at=None,
        delivery__normalized__in=list(normalized),
        delivery__is_test=False,
    ).update(revoked_at=timezone.now())


def pay_links_revoke_many(*, invoice_ids: Sequence[int], pairs: set[tuple[int, str]]) -> None:
    """`pay_links_revoke` for a bulk send: read the candidates coarsely, keep the exact
    (invoice id, address) ``pairs``, revoke those in one UPDATE. Drafts have none."""
    stale = [
        link_pk
        for link_pk, invoice_id, normalized in PayLink.objects.filter(
            invoice_id__in=list(invoice_ids),
            revoked_at=None,
            delivery__is_test=False,
        ).values_list("pk", "invoice_id", "delivery__normalized")
        if (invoice_id, normalized) in pairs
    ]
    if stale:
        PayLink.objects.filter(pk__in=stale).update(revoked_at=timezone.now())
