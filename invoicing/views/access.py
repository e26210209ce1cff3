"""The one home of "which invoicing objects may this member reach": the firm's own, else 404."""

from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from invoicing.delivery.models import Delivery, Suppression
from invoicing.models import Invoice


def get_invoice_for_member(request: HttpRequest, invoice_pk: int) -> Invoice:
    return get_object_or_404(
        Invoice.objects.select_related("client", "firm"), pk=invoice_pk, firm=request.firm
    )


def get_delivery_for_member(request: HttpRequest, invoice: Invoice, delivery_pk: int) -> Delivery:
    return get_object_or_404(
        Delivery.objects.select_related("invoice__client", "invoice__firm"),
        pk=delivery_pk,
        invoice=invoice,
        firm=request.firm,
    )


def get_suppression_for_member(request: HttpRequest, suppression_pk: int) -> Suppression:
    return get_object_or_404(Suppression, pk=suppression_pk, firm=request.firm)
