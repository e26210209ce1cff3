"""Users (email login), their memberships of firms, and invitations."""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal import joined_rows
from portal.models import Firm


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def get(self, *args: object, **kwargs: object) -> User:
        """``get(pk=<int>)``, the call Django's authentication makes on every request to
        read the signed-in user, is one SELECT of the row by hand (portal.joined_rows): the
        queryset took a third of a bare view's Python to build and compile. The instance is
        the one the queryset gives; any other lookup is the queryset's."""
        if args or kwargs.keys() != {"pk"} or type(kwargs["pk"]) is not int:
            return super().get(*args, **kwargs)
        rows = joined_rows.select_from(
            (_WHOLE_USER,),
            f"FROM {self.model._meta.db_table} u WHERE u.id = %s",
            [kwargs["pk"]],
            using=self.db,
        )
        if not rows:
            raise self.model.DoesNotExist(
                f"{self.model._meta.object_name} matching query does not exist."
            )
        return rows[0][0]

    def _create_user(self, email: str, password: str | None, **extra: object) -> User:
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    username = None
    email = models.EmailField(_("email address"), unique=True)
    # The language the portal speaks to this person, in pages and in the emails it sends them.
    language = models.CharField(
        _("language"), max_length=10, blank=True, choices=settings.LANGUAGES
    )

    # The weekly problems email (troubleshooting.digest); a person may turn it off.
    problems_digest = models.BooleanField(
        _("weekly problems email"),
        default=True,
        help_text=_(
            "On Mondays: what went wrong with mail last week, what fixed itself and what is "
            "still open. Nothing is sent in a week without open problems."
        ),
    )

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self) -> str:
        return self.shown_as(self.first_name, self.last_name, self.email)

    @staticmethod
    def shown_as(first_name: str, last_name: str, email: str) -> str:
        """How the portal names a person: the full name, else the address (also for rows
        read as columns, without a User)."""
        return f"{first_name} {last_name}".strip() or email


# Every column of a user, as UserManager.get reads the signed-in one.
_WHOLE_USER = joined_rows.Part(User, "u")


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    ADMIN = "admin", _("Admin")
    STAFF = "staff", _("Staff")


class Membership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=20, choices=Role.choices, default=Role.STAFF)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.UniqueConstraint(fields=["user", "firm"], name="membership_unique_user_firm")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.firm} ({self.role})"

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER

    @property
    def can_manage_members(self) -> bool:
        return self.role in (Role.OWNER, Role.ADMIN)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(_("email address"))
    role = models.CharField(_("role"), max_length=20, choices=Role.choices, default=Role.STAFF)
    # Only the hash is stored: a database leak must not hand out working invitation links.
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("invitation")
        verbose_name_plural = _("invitations")
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.email

    @property
    def is_usable(self) -> bool:
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


class SupportGrant(models.Model):
    """A firm owner's permission for the support team to act in the firm as an owner.

    Active while not revoked and `expires_at` lies in the future; checked on every request
    a support user makes, so nothing outlives the grant.
    """

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="support_grants")
    granted_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(_("access ends"))
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first_used_at = models.DateTimeField(null=True, blank=True)
    expiry_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("editor access grant")
        verbose_name_plural = _("editor access grants")
        ordering = ["-created"]
        indexes = [
            # Serves "expired grants whose owners were not told yet" for the beat task.
            models.Index(
                fields=["expires_at"],
                condition=models.Q(expiry_notified_at__isnull=True, revoked_at__isnull=True),
                name="supportgrant_expiry_todo_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.firm} until {self.expires_at:%Y-%m-%d %H:%M}"

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now


class AuditEntry(models.Model):
    """What happened under (or to) support access, for the firm's owners to read."""

    class Kind(models.TextChoices):
        GRANTED = "granted", _("Access granted")
        REVOKED = "revoked", _("Access revoked")
        EXPIRED = "expired", _("Access expired")
        ENTERED = "entered", _("Support entered the firm")
        EXITED = "exited", _("Support left the firm")
        REQUEST = "request", _("Change made by support")
        VIEWED = "viewed", _("Page viewed by support")
        SIGNED_OUT = "signed_out", _("Support signed out")
        REFUSED = "refused", _("Action refused to support")
        SUPPRESSION_REMOVED = "suppression_removed", _("Blocked address unblocked")
        PAY_LINK_REVOKED = "pay_link_revoked", _("Pay Now link revoked")

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="audit_entries")
    grant = models.ForeignKey(SupportGrant, null=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    method = models.CharField(max_length=10, blank=True)
    path = models.CharField(max_length=500, blank=True)
    view_name = models.CharField(max_length=200, blank=True)
    object_ref = models.CharField(max_length=200, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit entries")
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M} {self.kind} {self.path}"
