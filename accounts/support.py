"""Editor access: firm owners let the support team in, with owner permissions, for a while.

The grant is checked on every request a support user makes (`support_grant_for_session`),
every change they make is audited by the middleware, and a short list of actions stays out
of their reach whatever the grant says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

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
DEFAULT_VALIDITY = timedelta(days=30)
PRESETS = {
    "1d": timedelta(days=1),
    "1w": timedelta(weeks=1),
    "1m": DEFAULT_VALIDITY,
    "3m": timedelta(days=91),
}

# Views support may never use inside a firm: Editor access itself, mailbox credentials,
# members' accounts, removing the firm, bulk export. Names are URL names (namespace:name).
FORBIDDEN_VIEWS = frozenset(
    {
        "accounts:editor_access_save",
        "accounts:editor_access_revoke",
        "accounts:membership_role",
        "accounts:membership_remove",
        "accounts:firm_delete",
        "accounts:firm_export",
        "mailsync:credentials",
        "mailsync:oauth_start",
        "mailsync:oauth_complete",
        "mailsync:stop",
        "mailsync:remove",
    }
)


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


@transaction.atomic
def grant_create(*, firm: Firm, granted_by: User, expires_at: datetime) -> SupportGrant:
    """Replace any current grant of the firm with one ending at `expires_at`."""
    if expires_at <= timezone.now():
        raise SupportAccessError("ends_in_past")
    now = timezone.now()
    SupportGrant.objects.select_for_update().filter(
        firm=firm, revoked_at=None, expires_at__gt=now
    ).update(revoked_at=now, revoked_by=granted_by)
    grant = SupportGrant.objects.create(firm=firm, granted_by=granted_by, expires_at=expires_at)
    audit(firm=firm, kind=AuditEntry.Kind.GRANTED, actor=granted_by, grant=grant)
    transaction.on_commit(lambda: send_support_access_granted_email(grant=grant))
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
