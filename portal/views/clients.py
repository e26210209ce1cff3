from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from django.conf import settings
from django.contrib import messages
from django.db.models import Prefetch
from django.db.models.functions import Lower
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from portal import joined_rows
from portal.forms import ClientForm, ContactForm, DocumentUploadForm
from portal.models import Client, Contact, ContactAddress
from portal.paging import KeysFirstPaginator
from portal.rows import rendered_rows
from portal.selectors import ClientRow, clients_matching
from portal.services import client_create
from portal.tenancy import clients_for, get_client_for_member, member_required

TABS = ("contacts", "email", "documents", "problems")


# Orders of the client list (?sort=); each is served by an index (portal migration 0005).
SORTS = {
    "name": (Lower("display_name"), "pk"),
    "-name": (Lower("display_name").desc(), "-pk"),
    "-created": ("-created", "-pk"),
    "created": ("created", "pk"),
}


@lru_cache(maxsize=1)
def _page_annotations() -> list[Callable[[list[Client]], None]]:
    # Apps above portal add columns (the problem badge) through settings, so portal never
    # imports them. They see the shown page only: a page costs what it shows.
    return [import_string(path) for path in settings.CLIENT_LIST_PAGE_ANNOTATIONS]


@member_required
def client_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:200]
    show = request.GET.get("show", "active")
    sort = request.GET.get("sort", "name")
    if sort not in SORTS:
        sort = "name"
    clients = clients_for(request)
    if show in (Client.Status.ACTIVE, Client.Status.ARCHIVED):
        clients = clients.filter(status=show)
    if query:
        clients = clients_matching(clients, query=query)
    paginator = KeysFirstPaginator(clients.order_by(*SORTS[sort]), settings.CLIENTS_PER_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    shown = list(page.object_list)
    counts = joined_rows.counts_per_key(
        Contact._meta.db_table, "t", "client_id", [client.pk for client in shown]
    )
    for client in shown:
        client.contact_count = counts.get(client.pk, 0)
    for annotate in _page_annotations():
        annotate(shown)
    page.object_list = shown
    rows = rendered_rows("portal/clients/_row.html", [ClientRow.of(c) for c in shown])
    context = {"page": page, "rows": rows, "query": query, "show": show, "sort": sort}
    template = "portal/clients/_list.html" if request.headers.get("HX-Request") else None
    return render(request, template or "portal/clients/list.html", context)


@member_required
@require_http_methods(["GET", "POST"])
def client_create_view(request: HttpRequest) -> HttpResponse:
    form = ClientForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        client = client_create(firm=request.firm, **form.cleaned_data)
        messages.success(request, _("Client “%(name)s” created.") % {"name": client.display_name})
        return redirect(client)
    return render(request, "portal/clients/form.html", {"form": form})


@member_required
@require_http_methods(["GET", "POST"])
def client_edit(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    form = ClientForm(request.POST or None, instance=client)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Client saved."))
        return redirect(client)
    return render(request, "portal/clients/form.html", {"form": form, "client": client})


def _detail(request: HttpRequest, client_pk: int, tab: str, **extra: object) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    context: dict[str, object] = {"client": client, "tab": tab, "tabs": TABS}
    if tab == "contacts":
        context["contacts"] = Contact.objects.filter(client=client).prefetch_related(
            Prefetch("addresses", queryset=ContactAddress.objects.order_by("-is_primary", "pk"))
        )
        context.setdefault("contact_form", ContactForm())
    elif tab == "documents":
        context["documents"] = client.documents.select_related("uploaded_by")
        context.setdefault("upload_form", DocumentUploadForm())
    context.update(extra)
    return render(request, f"portal/clients/tab_{tab}.html", context)


@member_required
def client_detail(request: HttpRequest, client_pk: int) -> HttpResponse:
    return _detail(request, client_pk, "contacts")


@member_required
def client_documents(request: HttpRequest, client_pk: int) -> HttpResponse:
    return _detail(request, client_pk, "documents")


def render_contacts_tab(request: HttpRequest, client_pk: int, **extra: object) -> HttpResponse:
    """The contacts tab again, with a form that failed validation (and status 400)."""
    response = _detail(request, client_pk, "contacts", **extra)
    response.status_code = 400
    return response
