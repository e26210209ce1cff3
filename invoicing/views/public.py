"""The Pay Now page: no login; the token is the credential and shows one invoice only.

Mail scanners open every link in an email, so a GET here never changes payment state: it
only records that the link was opened.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from invoicing.models import Invoice
from invoicing.payments import provider_for_firm
from invoicing.services import invoice_paid_amount, pay_link_find, pay_link_viewed


@never_cache
@require_GET
def pay(request: HttpRequest, token: str) -> HttpResponse:
    link = pay_link_find(token=token)
    if link is None:
        # Nothing about any firm: a guessed or mistyped token learns nothing.
        return render(request, "invoicing/public/not_found.html", status=404)
    invoice = link.invoice
    if not link.is_usable() or invoice.status == Invoice.Status.VOID:
        return render(request, "invoicing/public/expired.html", {"firm": invoice.firm}, status=410)
    pay_link_viewed(link=link)
    offer = None
    if invoice.status != Invoice.Status.PAID:
        offer = provider_for_firm(invoice.firm_id).offer(invoice=invoice)
    context = {
        "invoice": invoice,
        "firm": invoice.firm,
        "lines": list(invoice.lines.all()),
        "paid_amount": invoice_paid_amount(invoice=invoice),
        "offer": offer,
    }
    response = render(request, "invoicing/public/pay.html", context)
    # The token is in the URL: never pass it on to another site in a Referer.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response
