"""Changes to users, firms' memberships and invitations."""

from __future__ import annotations

import secrets
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.emails import send_invitation_email
from accounts.models import Invitation, Membership, Role, User, hash_token
from portal.models import Firm

INVITATION_VALIDITY = timedelta(days=14)


class InvitationError(ValueError):
    pass


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "firm"
    slug, n = base, 2
    while Firm.objects.filter(slug=slug).exists():
        slug = f"{base}-{n}"
        n += 1
    return slug


@transaction.atomic
def firm_create_with_owner(*, name: str, owner: User) -> Firm:
    firm = Firm.objects.create(name=name.strip(), slug=_unique_slug(name))
    Membership.objects.create(user=owner, firm=firm, role=Role.OWNER)
    return firm


def invitation_create(*, firm: Firm, email: str, role: str, invited_by: User) -> Invitation:
    """Create an invitation and email its link. The token exists only in that email."""
    if Membership.objects.filter(firm=firm, user__email__iexact=email).exists():
        raise InvitationError("already_member")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        # One open invitation per address: a new one replaces the old link.
        Invitation.objects.filter(
            firm=firm, email__iexact=email, accepted_at=None, revoked_at=None
        ).update(revoked_at=timezone.now())
        invitation = Invitation.objects.create(
            firm=firm,
            email=email,
            role=role,
            token_hash=hash_token(token),
            invited_by=invited_by,
            expires_at=timezone.now() + INVITATION_VALIDITY,
        )
    transaction.on_commit(lambda: send_invitation_email(invitation=invitation, token=token))
    return invitation


def invitation_for_token(token: str) -> Invitation | None:
    return (
        Invitation.objects.select_related("firm", "invited_by")
        .filter(token_hash=hash_token(token))
        .first()
    )


def invitation_revoke(*, invitation: Invitation) -> None:
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])


def invitation_address_state(*, invitation: Invitation, user: User) -> str:
    """How `user` stands to the invited address: "verified" (they proved they own it),
    "unverified" (their account has it, not confirmed yet) or "other" (not theirs)."""
    addresses = EmailAddress.objects.filter(user=user, email__iexact=invitation.email)
    if addresses.filter(verified=True).exists():
        return "verified"
    if addresses.exists() or user.email.lower() == invitation.email.lower():
        return "unverified"
    return "other"


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    """Join the firm. Holding the link is not enough: the link may have been seen by others
    (a shared mailbox, a local outbox), so the user must have confirmed the invited address."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_usable:
        raise InvitationError("not_usable")
    state = invitation_address_state(invitation=invitation, user=user)
    if state != "verified":
        raise InvitationError("wrong_user" if state == "other" else "unverified")
    membership, _created = Membership.objects.get_or_create(
        user=user, firm=invitation.firm, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership


@transaction.atomic
def user_create_from_invitation(
    *, invitation: Invitation, password: str, first_name: str, last_name: str
) -> User:
    """Create the invited person's account with the address still unconfirmed: they join
    once they confirm it (the confirmation link goes to that address) and open the
    invitation signed in. Nobody joins by merely signing up under an invited address."""
    user = User.objects.create_user(
        email=invitation.email, password=password, first_name=first_name, last_name=last_name
    )
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=False)
    return user


def membership_set_role(*, membership: Membership, role: str) -> None:
    if membership.role == Role.OWNER and role != Role.OWNER and _last_owner(membership):
        raise InvitationError("last_owner")
    membership.role = role
    membership.save(update_fields=["role"])


def membership_remove(*, membership: Membership) -> None:
    if membership.role == Role.OWNER and _last_owner(membership):
        raise InvitationError("last_owner")
    membership.delete()


def _last_owner(membership: Membership) -> bool:
    return not (
        Membership.objects.filter(firm_id=membership.firm_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )
