"""Editor access: firm owners let the support team in, with owner permissions, for a while.

The grant is checked on every request a support user makes (`support_grant_for_session`),
every request they make (reads included) is audited by the middleware, and only the views in
`SUPPORT_ALLOWED_VIEWS` are open to them: everything else is refused whatever the grant says.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.emails import (
    send_support_access_expired_email,
    send_support_access_first_used_email,
    send_support_access_granted_email,
)
from accounts.models import AuditEntry, SupportGrant, User
from portal.models import Firm

SESSION_GRANT_KEY = "support_grant_id"
# Reads under a support session are audited once per page and minute: a page polled by htmx or
# reloaded leaves one row, a different page (or the same one later) another.
READ_AUDIT_WINDOW = timedelta(minutes=1)
DEFAULT_VALIDITY = timedelta(days=30)
PRESETS = {
    "1d": timedelta(days=1),
    "1w": timedelta(weeks=1),
    "1m": DEFAULT_VALIDITY,
    "3m": timedelta(days=91),
}

# What a support session may do inside a firm, by URL name (namespace:name). Everything else
# is refused (403, audited): an allow-list, so a page added later stays out of support's reach
# until someone decides it belongs here. Support works on clients, contacts, documents,
# invoices and mail troubleshooting; it never reaches members, invitations, roles, anyone's
# credentials or MFA, Editor access itself, firm or billing settings, or the outbox (which
# holds invitation and Pay Now mail).
SUPPORT_ALLOWED_VIEWS = frozenset(
    {
        # Clients, contacts, addresses, documents.
        "portal:home",
        "portal:client_list",
        "portal:client_create",
        "portal:client_detail",
        "portal:client_edit",
        "portal:client_documents",
        "portal:contact_create",
        "portal:contact_edit",
        "portal:contact_delete",
        "portal:contact_addresses_add",
        "portal:address_edit",
        "portal:address_delete",
        "portal:document_upload",
        "portal:document_download",
        # Invoices and their delivery.
        "invoicing:invoice_list",
        "invoicing:invoice_create",
        "invoicing:invoices_send_drafts",
        "invoicing:invoice_detail",
        "invoicing:invoice_edit",
        "invoicing:invoice_print",
        "invoicing:invoice_void",
        "invoicing:invoice_send",
        "invoicing:invoice_send_test",
        "invoicing:payment_record",
        "invoicing:delivery_resend",
        "invoicing:pay_link_revoke",
        "invoicing:client_invoices",
        "invoicing:suppressions",
        "invoicing:suppression_remove",
        # Mail on clients, and mailbox troubleshooting (never the credentials).
        "mailsync:client_email",
        "mailsync:message",
        "mailsync:message_images",
        "mailsync:compose",
        "mailsync:reply",
        "mailsync:written_email",
        "mailsync:written_dismiss",
        "mailsync:client_sender",
        "mailsync:unlinked",
        "mailsync:unlinked_choose_client",
        "mailsync:unlinked_link",
        "mailsync:unlinked_ignore",
        "mailsync:unlinked_ignored",
        "mailsync:unlinked_unignore",
        "mailsync:sync_now",
        "mailsync:folders",
        "mailsync:status",
        # Problems pages and guides.
        "troubleshooting:dashboard",
        "troubleshooting:guides",
        "troubleshooting:mark_handled",
        "troubleshooting:recheck_domain",
        "troubleshooting:allowlist",
        "troubleshooting:send_test",
        "troubleshooting:fix_address_resend",
        "troubleshooting:client_problems",
        "troubleshooting:status",
        # Leaving: the support pages, signing out, the language switch.
        "accounts:support",
        "accounts:support_enter",
        "accounts:support_exit",
        "account_logout",
        "set_language",
    }
)


def support_may_use(view_name: str | None) -> bool:
    """Whether a support session may open the view with this URL name (default: no)."""
    return view_name in SUPPORT_ALLOWED_VIEWS


class SupportAccessError(PermissionError):
    pass


def is_support_user(user: User) -> bool:
    return bool(
        user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.groups.filter(name=settings.SUPPORT_GROUP_NAME).exists()
    )


def active_grant(firm: Firm, *, now: datetime | None = None) -> SupportGrant | None:
    now = now or timezone.now()
    return (
        SupportGrant.objects.select_related("granted_by")
        .filter(firm=firm, revoked_at=None, expires_at__gt=now)
        .order_by("-created")
        .first()
    )


def active_grants(*, now: datetime | None = None):
    now = now or timezone.now()
    return (
        SupportGrant.objects.select_related("firm", "granted_by")
        .filter(revoked_at=None, expires_at__gt=now)
        .order_by("firm__name")
    )


def audit(
    *,
    firm: Firm,
    kind: str,
    actor: User | None,
    grant: SupportGrant | None = None,
    request: HttpRequest | None = None,
    status_code: int | None = None,
    object_ref: str = "",
) -> AuditEntry:
    match = getattr(request, "resolver_match", None) if request else None
    return AuditEntry.objects.create(
        firm=firm,
        grant=grant,
        actor=actor,
        kind=kind,
        method=request.method if request else "",
        path=request.get_full_path()[:500] if request else "",
        view_name=(match.view_name if match else "")[:200],
        object_ref=object_ref[:200],
        status_code=status_code,
    )


def audit_support_request(
    *,
    request: HttpRequest,
    grant: SupportGrant,
    actor: User,
    status_code: int,
    refused: bool,
    object_ref: str = "",
) -> AuditEntry | None:
    """Record one request of a support session: refused, a change, or a read (deduplicated)."""
    if refused:
        kind = AuditEntry.Kind.REFUSED
    elif request.method in ("GET", "HEAD", "OPTIONS"):
        kind = AuditEntry.Kind.VIEWED
        recent = AuditEntry.objects.filter(
            firm=grant.firm,
            grant=grant,
            actor=actor,
            kind=kind,
            path=request.get_full_path()[:500],
            created__gte=timezone.now() - READ_AUDIT_WINDOW,
        )
        if recent.exists():
            return None
    else:
        kind = AuditEntry.Kind.REQUEST
    return audit(
        firm=grant.firm,
        kind=kind,
        actor=actor,
        grant=grant,
        request=request,
        status_code=status_code,
        object_ref=object_ref,
    )


def support_access_limit(*, now: datetime | None = None) -> datetime:
    """The latest end a grant made now may have: the end of the day SUPPORT_ACCESS_MAX_DAYS
    from today (so "until a date" can pick that whole day)."""
    now = now or timezone.now()
    last_day = timezone.localdate(now) + timedelta(days=settings.SUPPORT_ACCESS_MAX_DAYS)
    return timezone.make_aware(datetime.combine(last_day, time.max))


@transaction.atomic
def grant_create(*, firm: Firm, granted_by: User, expires_at: datetime) -> SupportGrant:
    """Replace any current grant of the firm with one ending at `expires_at`."""
    if expires_at <= timezone.now():
        raise SupportAccessError("ends_in_past")
    if expires_at > support_access_limit():
        raise SupportAccessError("too_long")
    now = timezone.now()
    SupportGrant.objects.select_for_update().filter(
        firm=firm, revoked_at=None, expires_at__gt=now
    ).update(revoked_at=now, revoked_by=granted_by)
    grant = SupportGrant.objects.create(firm=firm, granted_by=granted_by, expires_at=expires_at)
    audit(firm=firm, kind=AuditEntry.Kind.GRANTED, actor=granted_by, grant=grant)
    transaction.on_commit(lambda: send_support_access_granted_email(grant=grant))
    # Read by the owners' banner on every page, from the firm the request has loaded anyway.
    Firm.objects.filter(pk=firm.pk).update(support_access_until=expires_at)
    return grant


@transaction.atomic
def grant_revoke(*, grant: SupportGrant, revoked_by: User) -> None:
    grant = SupportGrant.objects.select_for_update().get(pk=grant.pk)
    if grant.revoked_at is not None:
        return
    grant.revoked_at = timezone.now()
    grant.revoked_by = revoked_by
    grant.save(update_fields=["revoked_at", "revoked_by"])
    audit(firm=grant.firm, kind=AuditEntry.Kind.REVOKED, actor=revoked_by, grant=grant)
    Firm.objects.filter(pk=grant.firm_id, support_access_until=grant.expires_at).update(
        support_access_until=None
    )


def support_grant_for_session(request: HttpRequest) -> SupportGrant | None:
    """The grant this support session acts under, if it is still valid right now."""
    grant_id = request.session.get(SESSION_GRANT_KEY)
    if grant_id is None or not request.user.is_staff:
        return None
    grant = SupportGrant.objects.select_related("firm").filter(pk=grant_id).first()
    if grant is None or not grant.is_active() or not is_support_user(request.user):
        return None
    return grant


@transaction.atomic
def support_enter(*, request: HttpRequest, grant: SupportGrant) -> None:
    grant = SupportGrant.objects.select_for_update().select_related("firm").get(pk=grant.pk)
    if not is_support_user(request.user) or not grant.is_active():
        raise SupportAccessError("not_allowed")
    request.session[SESSION_GRANT_KEY] = grant.pk
    audit(
        firm=grant.firm,
        kind=AuditEntry.Kind.ENTERED,
        actor=request.user,
        grant=grant,
        request=request,
    )
    if grant.first_used_at is None:
        grant.first_used_at = timezone.now()
        grant.save(update_fields=["first_used_at"])
        transaction.on_commit(
            lambda: send_support_access_first_used_email(grant=grant, support_user=request.user)
        )


def support_exit(*, request: HttpRequest, grant: SupportGrant | None, reason: str) -> None:
    request.session.pop(SESSION_GRANT_KEY, None)
    if grant is not None and reason == "exit":
        audit(
            firm=grant.firm,
            kind=AuditEntry.Kind.EXITED,
            actor=request.user,
            grant=grant,
            request=request,
        )


def grants_expired_notify(*, now: datetime | None = None) -> int:
    """Tell owners about grants that ran out; safe to run twice (each grant is claimed once)."""
    now = now or timezone.now()
    done = 0
    pending = SupportGrant.objects.filter(
        expiry_notified_at=None, revoked_at=None, expires_at__lte=now
    ).values_list("pk", flat=True)
    for pk in list(pending):
        with transaction.atomic():
            grant = (
                SupportGrant.objects.select_for_update(skip_locked=True)
                .select_related("firm")
                .filter(pk=pk, expiry_notified_at=None)
                .first()
            )
            if grant is None:
                continue
            grant.expiry_notified_at = now
            grant.save(update_fields=["expiry_notified_at"])
            audit(firm=grant.firm, kind=AuditEntry.Kind.EXPIRED, actor=None, grant=grant)
            transaction.on_commit(lambda g=grant: send_support_access_expired_email(grant=g))
            done += 1
    return done
