from __future__ import annotations

from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import AcceptInvitationForm, InviteForm, RoleForm
from accounts.models import Invitation, Membership, Role
from accounts.selectors import (
    SESSION_FIRM_KEY,
    members_of,
    open_invitations_of,
    user_by_email,
)
from accounts.services import (
    InvitationError,
    invitation_accept,
    invitation_address_state,
    invitation_create,
    invitation_for_token,
    invitation_revoke,
    membership_remove,
    membership_set_role,
    user_create_from_invitation,
)
from portal.ratelimits import RateLimited, hit
from portal.tenancy import member_required, roles_required

MANAGERS = (Role.OWNER, Role.ADMIN)

_ERRORS = {
    "already_member": _("That person is already a member of this firm."),
    "last_owner": _("A firm needs at least one owner. Make someone else owner first."),
}


@member_required
def members(request: HttpRequest) -> HttpResponse:
    can_manage = request.member_role in MANAGERS
    context = {
        "memberships": members_of(request.firm),
        "invitations": open_invitations_of(request.firm) if can_manage else [],
        "invite_form": InviteForm(),
        "can_manage": can_manage,
        "roles": Role.choices,
    }
    return render(request, "accounts/members.html", context)


@roles_required(*MANAGERS)
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            hit("invitation", user_id=request.user.pk, firm_id=request.firm.pk)
        except RateLimited as limited:
            form.add_error(None, limited.message)
            status = 429
    if form.is_valid():
        role = form.cleaned_data["role"]
        if role == Role.OWNER and request.member_role != Role.OWNER:
            messages.error(request, _("Only an owner can invite another owner."))
            return redirect("accounts:members")
        try:
            invitation_create(
                firm=request.firm,
                email=form.cleaned_data["email"],
                role=role,
                invited_by=request.user,
            )
        except InvitationError as exc:
            messages.error(request, _ERRORS[str(exc)])
        else:
            messages.success(
                request,
                _("Invitation sent to %(email)s.") % {"email": form.cleaned_data["email"]},
            )
        return redirect("accounts:members")
    context = {
        "memberships": members_of(request.firm),
        "invitations": open_invitations_of(request.firm),
        "invite_form": form,
        "can_manage": True,
        "roles": Role.choices,
    }
    return render(request, "accounts/members.html", context, status=status)


@roles_required(*MANAGERS)
@require_POST
def invitation_revoke_view(request: HttpRequest, invitation_pk: int) -> HttpResponse:
    invitation = get_object_or_404(Invitation, pk=invitation_pk, firm=request.firm)
    invitation_revoke(invitation=invitation)
    messages.success(request, _("Invitation withdrawn."))
    return redirect("accounts:members")


@roles_required(Role.OWNER)
@require_POST
def membership_role(request: HttpRequest, membership_pk: int) -> HttpResponse:
    membership = get_object_or_404(Membership, pk=membership_pk, firm=request.firm)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            membership_set_role(membership=membership, role=form.cleaned_data["role"])
        except InvitationError as exc:
            messages.error(request, _ERRORS[str(exc)])
        else:
            messages.success(request, _("Role changed."))
    return redirect("accounts:members")


@roles_required(Role.OWNER)
@require_POST
def membership_remove_view(request: HttpRequest, membership_pk: int) -> HttpResponse:
    membership = get_object_or_404(Membership, pk=membership_pk, firm=request.firm)
    try:
        membership_remove(membership=membership)
    except InvitationError as exc:
        messages.error(request, _ERRORS[str(exc)])
    else:
        messages.success(
            request, _("%(user)s was removed from the firm.") % {"user": membership.user}
        )
    return redirect("accounts:members")


@login_required
@require_POST
def switch_firm(request: HttpRequest, membership_pk: int) -> HttpResponse:
    membership = get_object_or_404(Membership, pk=membership_pk, user=request.user)
    request.session[SESSION_FIRM_KEY] = membership.firm_id
    return redirect("portal:client_list")


def _send_confirmation(request: HttpRequest, invitation: Invitation, user) -> None:
    address = EmailAddress.objects.filter(user=user, email__iexact=invitation.email).first()
    if address is None:
        address = EmailAddress.objects.create(user=user, email=invitation.email, verified=False)
    address.send_confirmation(request, signup=False)


@require_http_methods(["GET", "POST"])
def invitation_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    invitation = invitation_for_token(token)
    if invitation is None or not invitation.is_usable:
        return render(request, "accounts/invitation_invalid.html", status=410)
    if request.user.is_authenticated:
        state = invitation_address_state(invitation=invitation, user=request.user)
        if state == "other":
            return render(
                request,
                "accounts/invitation_wrong_user.html",
                {"invitation": invitation},
                status=403,
            )
        if state == "unverified":
            # Signed in, but the invited address is not confirmed yet: confirming it is what
            # proves the invitation reached them.
            sent = False
            if request.method == "POST":
                _send_confirmation(request, invitation, request.user)
                sent = True
            return render(
                request,
                "accounts/invitation_confirm_email.html",
                {"invitation": invitation, "sent": sent, "signed_in": True},
                status=403,
            )
        if request.method == "POST":
            try:
                membership = invitation_accept(invitation=invitation, user=request.user)
            except InvitationError:
                return render(request, "accounts/invitation_invalid.html", status=410)
            request.session[SESSION_FIRM_KEY] = membership.firm_id
            messages.success(request, _("You joined %(firm)s.") % {"firm": invitation.firm})
            return redirect("portal:client_list")
        return render(request, "accounts/invitation_accept.html", {"invitation": invitation})
    if user_by_email(invitation.email) is not None:
        # They have an account: sign in first, then come back to this page to accept.
        return render(
            request,
            "accounts/invitation_sign_in.html",
            {"invitation": invitation, "next": request.get_full_path()},
        )
    form = AcceptInvitationForm(request.POST or None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        user = user_create_from_invitation(invitation=invitation, **form.cleaned_data)
        _send_confirmation(request, invitation, user)
        return render(
            request,
            "accounts/invitation_confirm_email.html",
            {"invitation": invitation, "sent": True, "signed_in": False},
        )
    return render(
        request,
        "accounts/invitation_signup.html",
        {"invitation": invitation, "form": form},
        status=400 if request.method == "POST" else 200,
    )
