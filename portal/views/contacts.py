from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from portal.forms import AddAddressesForm, AddressForm, ContactForm
from portal.services import (
    contact_address_remove,
    contact_address_update,
    contact_addresses_add,
    contact_create,
)
from portal.tenancy import (
    get_address_for_member,
    get_client_for_member,
    get_contact_for_member,
    member_required,
)
from portal.views.clients import render_contacts_tab


@member_required
@require_POST
def contact_create_view(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    form = ContactForm(request.POST)
    if not form.is_valid():
        return render_contacts_tab(request, client.pk, contact_form=form)
    contact_create(
        client=client, name=form.cleaned_data["name"], addresses=form.cleaned_data["addresses"]
    )
    messages.success(request, _("Contact added."))
    return redirect(client)


@member_required
@require_http_methods(["GET", "POST"])
def contact_edit(request: HttpRequest, client_pk: int, contact_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    contact = get_contact_for_member(request, client, contact_pk)
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if name:
            contact.name = name[:200]
            contact.save(update_fields=["name"])
            messages.success(request, _("Contact saved."))
            return redirect(client)
        messages.error(request, _("A contact needs a name."))
    return render(request, "portal/contacts/edit.html", {"client": client, "contact": contact})


@member_required
@require_POST
def contact_delete(request: HttpRequest, client_pk: int, contact_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    contact = get_contact_for_member(request, client, contact_pk)
    contact.delete()
    messages.success(request, _("Contact “%(name)s” removed.") % {"name": contact.name})
    return redirect(client)


@member_required
@require_POST
def contact_addresses_add_view(
    request: HttpRequest, client_pk: int, contact_pk: int
) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    contact = get_contact_for_member(request, client, contact_pk)
    form = AddAddressesForm(request.POST)
    if not form.is_valid():
        return render_contacts_tab(request, client.pk, add_form=form, add_form_contact=contact.pk)
    added = contact_addresses_add(contact=contact, addresses=form.cleaned_data["addresses"])
    messages.success(request, _("%(count)d address(es) added.") % {"count": added})
    return redirect(client)


@member_required
@require_http_methods(["GET", "POST"])
def address_edit(request: HttpRequest, client_pk: int, address_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    address = get_address_for_member(request, client, address_pk)
    form = AddressForm(request.POST or None, instance=address)
    if request.method == "POST" and form.is_valid():
        contact_address_update(
            address=address,
            new=form.cleaned_data["address"],
            is_primary=form.cleaned_data["is_primary"],
            receives_invoices=form.cleaned_data["receives_invoices"],
        )
        messages.success(request, _("Address saved."))
        return redirect(client)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "portal/contacts/address_form.html",
        {"client": client, "address": address, "form": form},
        status=status,
    )


@member_required
@require_POST
def address_delete(request: HttpRequest, client_pk: int, address_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    address = get_address_for_member(request, client, address_pk)
    contact_address_remove(address=address)
    messages.success(request, _("Address %(address)s removed.") % {"address": address.address})
    return redirect(client)
