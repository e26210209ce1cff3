"""The Pay Now page: no login; the token is the credential and shows one invoice only.

Mail scanners open every link in an email, so a GET here never changes payment state: it
only records that the link was opened. Asking the firm for a new link is a POST from the
page (CSRF-protected), which scanners do not send.
"""

from __future__ import annotations

from django.db.models import prefetch_related_objects
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_link_find, pay_link_viewed
from invoicing.payments import provider_for_firm
from invoicing.payments.link_requests import pay_link_request_new
from invoicing.payments.recording import invoice_paid_amount
from invoicing.selectors import billing_settings_get


class HttpResponseSeeOther(HttpResponseRedirect):
    # 303: the browser follows with a GET, whatever the method of the form that led here.
    status_code = 303


def _public(response: HttpResponse) -> HttpResponse:
    # The token is in the URL: never pass it on to another site in a Referer. Not
    # "no-referrer": under it Chromium sends `Origin: null` with the page's own forms (Pay by
    # card, ask for a new link), which Django's CSRF check refuses.
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex"
    return response


def not_found_page(request: HttpRequest) -> HttpResponse:
    # Nothing about any firm: a guessed or mistyped token learns nothing.
    return _public(render(request, "invoicing/public/not_found.html", status=404))


def expired_page(request: HttpRequest, link: PayLink, token: str) -> HttpResponse:
    """An expired or revoked link, or a void invoice: say so, and let the client ask for a
    new link (not for a void invoice: there is nothing left to pay)."""
    invoice = link.invoice
    context = {
        "firm": invoice.firm,
        "token": token,
        "can_request": _can_request(link),
    }
    return _public(render(request, "invoicing/public/expired.html", context, status=410))


def _can_request(link: PayLink) -> bool:
    # Not for a void invoice (nothing to pay), nor for a member's test copy (they send
    # themselves another).
    return (
        link.invoice.status != Invoice.Status.VOID
        and link.delivery is not None
        and not link.delivery.is_test
    )


@never_cache
@require_GET
def pay(request: HttpRequest, token: str) -> HttpResponse:
    link = pay_link_find(token=token)
    if link is None:
        return not_found_page(request)
    if not link.is_usable():
        return expired_page(request, link, token)
    invoice = link.invoice
    pay_link_viewed(link=link)
    # Read once: the lines table and `invoice.total` both use them.
    prefetch_related_objects([invoice], "lines")
    offer = None
    if invoice.status != Invoice.Status.PAID:
        offer = provider_for_firm(invoice.firm_id).offer(invoice=invoice)
    # The firm's invoice details; the offline offer read them already.
    billing = offer.context.get("billing") if offer is not None else None
    if billing is None:
        billing = billing_settings_get(firm=invoice.firm)
    context = {
        "invoice": invoice,
        "firm": invoice.firm,
        "billing": billing,
        "lines": list(invoice.lines.all()),
        "paid_amount": invoice_paid_amount(invoice=invoice),
        "offer": offer,
    }
    return _public(render(request, "invoicing/public/pay.html", context))


@never_cache
@require_POST
def pay_link_request(request: HttpRequest, token: str) -> HttpResponse:
    """ "Ask for a new link" from the expired page: the firm is told, once a day per link."""
    link = pay_link_find(token=token)
    if link is None:
        return not_found_page(request)
    if link.is_usable():
        # The link works after all: nothing to ask for, show the invoice.
        return HttpResponseSeeOther(reverse("invoicing:pay", args=[token]))
    if not _can_request(link):
        return expired_page(request, link, token)
    # Asked twice the same day: the same answer, the firm was already told.
    pay_link_request_new(link=link)
    context = {"firm": link.invoice.firm}
    return _public(render(request, "invoicing/public/link_requested.html", context))
