"""Pay by card: start a Stripe Checkout from the Pay Now page, and Stripe's webhook.

Starting a checkout is a POST from the page (CSRF-protected) because mail scanners open every
link in an email; the token is checked exactly as the page checks it. The webhook is an
untrusted hint until its signature checks out, and answers 200 whenever retrying would change
nothing, so Stripe stops sending it.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import stripe
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from invoicing.models import Invoice
from invoicing.paylinks import pay_link_find
from invoicing.payments import provider_for_firm
from invoicing.payments.recording import invoice_paid_amount
from invoicing.payments.stripe import (
    StripeCheckoutError,
    StripeProvider,
    event_process,
    event_verify,
)
from invoicing.views.public import HttpResponseSeeOther, expired_page, not_found_page

logger = logging.getLogger(__name__)


@never_cache
@require_POST
def checkout(request: HttpRequest, token: str) -> HttpResponse:
    link = pay_link_find(token=token)
    if link is None:
        return not_found_page(request)
    invoice = link.invoice
    if not link.is_usable():
        return expired_page(request, link, token)
    provider = provider_for_firm(invoice.firm_id)
    if not isinstance(provider, StripeProvider):
        raise Http404("Card payment is not offered for this invoice.")
    pay_url = reverse("invoicing:pay", args=[token])
    amount = invoice.total - invoice_paid_amount(invoice=invoice)
    if invoice.status == Invoice.Status.PAID or amount <= Decimal("0"):
        # Paid meanwhile (another tab, a bank transfer): the page says so.
        return HttpResponseSeeOther(pay_url)
    try:
        checkout_url = provider.start(link=link, token=token, amount=amount)
    except StripeCheckoutError:
        context = {"firm": invoice.firm, "invoice": invoice, "pay_url": pay_url}
        return render(request, "invoicing/pay_stripe_unavailable.html", context, status=502)
    response = HttpResponseSeeOther(checkout_url)
    response["Referrer-Policy"] = "no-referrer"
    return response


@csrf_exempt
@require_POST
def webhook(request: HttpRequest) -> HttpResponse:
    if not settings.STRIPE_SECRET_KEY:
        raise Http404("Stripe is not configured.")
    if not settings.STRIPE_WEBHOOK_SECRET:
        # Misconfigured, not forged: 503 so Stripe keeps the event and retries once it is set.
        logger.error("A Stripe webhook arrived but STRIPE_WEBHOOK_SECRET is not set")
        return HttpResponse("webhook secret not configured", status=503)
    try:
        event = event_verify(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
    except (stripe.SignatureVerificationError, ValueError) as exc:
        logger.warning("Refused a Stripe webhook: %s", exc)
        return HttpResponse("invalid signature", status=400)
    outcome = event_process(event=event)
    logger.info("Stripe event %s (%s): %s", event.get("id"), event.get("type"), outcome.value)
    return HttpResponse(outcome.value)
