"""The one home of "which invoicing objects may this member reach": the firm's own, else 404."""

from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from invoicing.delivery.models import Delivery, Suppression
from invoicing.models import Invoice
from portal import joined_rows
from portal.models import Client
from portal.tenancy import firm_rows_or_404

_INVOICE_AND_CLIENT = (joined_rows.Part(Invoice, "i"), joined_rows.Part(Client, "c"))


def get_invoice_for_member(request: HttpRequest, invoice_pk: int) -> Invoice:
    """The firm's invoice, with its client (and the firm, the request's own), else 404."""
    invoice, client = firm_rows_or_404(
        _INVOICE_AND_CLIENT,
        f"FROM {Invoice._meta.db_table} i JOIN {Client._meta.db_table} c ON c.id = i.client_id"
        " WHERE i.id = %(pk)s AND i.firm_id = %(firm)s",
        invoice_pk,
        request.firm,
    )
    client.firm = invoice.firm = request.firm
    invoice.client = client
    return invoice


def get_delivery_for_member(request: HttpRequest, invoice: Invoice, delivery_pk: int) -> Delivery:
    return get_object_or_404(
        Delivery.objects.select_related("invoice__client", "invoice__firm"),
        pk=delivery_pk,
        invoice=invoice,
        firm=request.firm,
    )


def get_suppression_for_member(request: HttpRequest, suppression_pk: int) -> Suppression:
    return get_object_or_404(Suppression, pk=suppression_pk, firm=request.firm)
