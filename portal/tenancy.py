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
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from portal import joined_rows
from portal.models import Client, Contact, ContactAddress, Document, Firm

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


def firm_rows_or_404(
    parts: tuple[joined_rows.Part, ...], clause: str, pk: int, firm: Firm
) -> tuple[Model | None, ...]:
    """The one row of ``parts`` that ``clause`` (its FROM and WHERE, ending in ``key =
    %(pk)s AND firm = %(firm)s`` for the first part's table) finds, else 404. Our own SQL
    (portal.joined_rows): the object each page of a client or an invoice is about, read on
    every view of it, cost more Python as a queryset than the query took to run."""
    rows = joined_rows.select_from(parts, clause, {"pk": pk, "firm": firm.pk})
    if not rows:
        raise Http404(f"No {parts[0].model._meta.object_name} matches the given query.")
    return rows[0]


_CLIENT = (joined_rows.Part(Client, "c"),)


def get_client_for_member(request: HttpRequest, client_pk: int) -> Client:
    (client,) = firm_rows_or_404(
        _CLIENT,
        f"FROM {Client._meta.db_table} c WHERE c.id = %(pk)s AND c.firm_id = %(firm)s",
        client_pk,
        request.firm,
    )
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
