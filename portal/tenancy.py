"""Tenant scoping: the one home of "which firm is this request acting for".

`accounts.middleware.CurrentFirmMiddleware` puts the member's firm and role on the request
(`request.firm`, `request.member_role`). Every view that touches practice data is wrapped in
`member_required` and reaches objects only through the `get_*_for_member` helpers or
`clients_for`, so another firm's object is always a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from portal.models import Client, Contact, ContactAddress, Document

ViewFunc = Callable[..., HttpResponse]


def member_required(view: ViewFunc) -> ViewFunc:
    """Let in signed-in members of a firm; send others to sign in or to a 'no firm' page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if getattr(request, "firm", None) is None:
            return render(request, "portal/no_firm.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


def roles_required(*roles: str) -> Callable[[ViewFunc], ViewFunc]:
    """Like member_required, and the member's role must be one of `roles`."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @member_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.member_role not in roles:
                return render(request, "portal/forbidden.html", status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def clients_for(request: HttpRequest) -> QuerySet[Client]:
    return Client.objects.filter(firm=request.firm)


def get_client_for_member(request: HttpRequest, client_pk: int) -> Client:
    client = get_object_or_404(Client, pk=client_pk, firm=request.firm)
    client.firm = request.firm  # read with the membership: no join, no second Firm
    return client


def get_contact_for_member(request: HttpRequest, client: Client, contact_pk: int) -> Contact:
    return get_object_or_404(Contact, pk=contact_pk, client=client, client__firm=request.firm)


def get_address_for_member(request: HttpRequest, client: Client, address_pk: int) -> ContactAddress:
    return get_object_or_404(
        ContactAddress.objects.select_related("contact"),
        pk=address_pk,
        contact__client=client,
        firm=request.firm,
    )


def get_document_for_member(request: HttpRequest, client: Client, document_pk: int) -> Document:
    return get_object_or_404(Document, pk=document_pk, client=client, client__firm=request.firm)
