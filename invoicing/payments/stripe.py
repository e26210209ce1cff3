"""Stripe Checkout: the client pays by card on Stripe's page, Stripe's webhook tells us.

Every call to Stripe's API goes through `_client()`, which points the official SDK at
`settings.STRIPE_API_BASE` (tests use a loopback server standing in for Stripe) with explicit
timeouts and bounded retries. The webhook is only a hint until its signature checks out; the
payment is then recorded through `recording.payment_record` under the invoice's row
lock, with the Checkout Session's id as the reference, so a retried or repeated event (Stripe
sends `checkout.session.completed` and, for delayed methods, `async_payment_succeeded`) is
recorded once.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils.translation import gettext as _

from invoicing.payments.base import PaymentOffer, PaymentProvider
from invoicing.payments.offline import OfflineProvider

if TYPE_CHECKING:
    from stripe.params.checkout import SessionCreateParams

    from invoicing.models import Invoice, PayLink

logger = logging.getLogger(__name__)

NAME = "stripe"
# Seconds to connect and to wait for an answer: a client is waiting on the other side of the
# redirect, and a hung API call must not hold a web worker for the SDK's default 80 s.
TIMEOUT = (5.0, 20.0)
# The SDK retries connection errors and 5xx answers, reusing the idempotency key, so a retry
# can never create a second session.
NETWORK_RETRIES = 2

# Stripe counts amounts in a currency's smallest unit, which is not always a hundredth
# (https://docs.stripe.com/currencies#zero-decimal).
# fmt: off
ZERO_DECIMAL = frozenset({
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
    "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
})
# fmt: on
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


class StripeCheckoutError(Exception):
    """Checkout could not be started; the client is told to try again or pay otherwise."""


class Outcome(enum.Enum):
    """What a webhook event did; every outcome is answered 200 (retrying changes nothing).
    An error while recording answers 500, so Stripe sends the event again."""

    RECORDED = "recorded"
    # Recorded, and kept with a problem for the owner (void invoice, other currency, paid
    # more than owed): never dropped.
    NEEDS_ATTENTION = "recorded_needs_attention"
    DUPLICATE = "duplicate"
    UNKNOWN_INVOICE = "unknown_invoice"
    IGNORED = "ignored"
    REFUSED = "refused"


def is_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _exponent(currency: str) -> int:
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_minor_units(amount: Decimal, currency: str) -> int:
    """`Decimal("120.50")`, "EUR" → 12050. Refuses amounts the currency cannot express."""
    minor = amount.scaleb(_exponent(currency))
    if minor != minor.to_integral_value():
        # Never round a client's payment: the invoice would be left over- or under-paid.
        raise StripeCheckoutError(f"{amount} {currency} has more decimals than the currency")
    return int(minor)


def from_minor_units(amount: int, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-_exponent(currency)).quantize(Decimal("0.01"))


def _client(http_client: stripe.HTTPClient) -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=http_client,
        max_network_retries=NETWORK_RETRIES,
    )


class StripeProvider(PaymentProvider):
    """Card payment through Stripe Checkout, offered next to the firm's own instructions."""

    name = NAME

    def offer(self, *, invoice: Invoice) -> PaymentOffer:
        # The client may still prefer a bank transfer: keep the offline instructions.
        offline = OfflineProvider().offer(invoice=invoice)
        return PaymentOffer(template="invoicing/pay_stripe.html", context=offline.context)

    def start(self, *, link: PayLink, token: str, amount: Decimal) -> str:
        """Create a Checkout Session for `amount` of the link's invoice; returns its URL.

        `token` is the link's own (stored only hashed): Stripe sends the client back to it.
        """
        invoice = link.invoice
        currency = invoice.currency
        unit_amount = to_minor_units(amount, currency)
        pay_url = settings.SITE_URL + reverse("invoicing:pay", args=[token])
        ids = {"invoice_id": str(invoice.pk), "pay_link_id": str(link.pk)}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": unit_amount,
                        "product_data": {
                            "name": _("Invoice #%(number)s from %(firm)s")
                            % {"number": invoice.number, "firm": invoice.firm.name},
                        },
                    },
                }
            ],
            "success_url": pay_url + "?checkout=success",
            "cancel_url": pay_url,
            "client_reference_id": str(invoice.pk),
            "metadata": ids,
            # On the PaymentIntent too, so the firm's Stripe dashboard can be reconciled.
            "payment_intent_data": {"metadata": ids},
        }
        # One session per link and amount: a double click, a reload or an SDK retry gets the
        # same session back instead of a second chance to pay the same invoice. Stripe refuses
        # a key replayed with other parameters (the item's name in another language, a
        # renamed firm), so their digest is part of the key.
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        key = f"portal-checkout-{link.pk}-{currency}-{unit_amount}-{digest}"
        http_client = stripe.RequestsClient(timeout=TIMEOUT)
        try:
            session = _client(http_client).v1.checkout.sessions.create(
                params=params,
                options={"idempotency_key": key},
            )
        except stripe.StripeError as exc:
            logger.warning("Stripe refused a checkout session for invoice %s: %s", invoice.pk, exc)
            raise StripeCheckoutError(str(exc)) from exc
        finally:
            http_client.close()
        logger.info("Stripe checkout session %s for invoice %s", session.id, invoice.pk)
        if not session.url:
            raise StripeCheckoutError(f"session {session.id} has no URL")
        return session.url


def event_verify(*, payload: bytes, signature: str) -> dict[str, Any]:
    """The event, if Stripe signed it with our endpoint's secret in the last five minutes.

    Raises `stripe.SignatureVerificationError` (or ValueError for a payload that is not JSON).
    """
    event = stripe.Webhook.construct_event(
        payload, signature, settings.STRIPE_WEBHOOK_SECRET, api_key=settings.STRIPE_SECRET_KEY
    )
    return event.to_dict()


def event_process(*, event: dict[str, Any]) -> Outcome:
    """Record the payment a verified event reports, once however often it arrives."""
    from invoicing.invoices import InvoiceError
    from invoicing.models import Invoice, Payment
    from invoicing.payments.recording import payment_record

    if event.get("type") not in PAID_EVENTS:
        return Outcome.IGNORED
    session = event.get("data", {}).get("object", {})
    # `completed` also arrives for delayed methods (SEPA debit) before the money has moved;
    # those are recorded when `async_payment_succeeded` says it has.
    if session.get("payment_status") != "paid":
        return Outcome.IGNORED
    session_id = str(session.get("id") or "")
    invoice_id = str((session.get("metadata") or {}).get("invoice_id") or "")
    if not session_id or not invoice_id.isdigit():
        # A session of the same Stripe account that this portal did not create.
        return Outcome.UNKNOWN_INVOICE
    currency = str(session.get("currency") or "").upper()
    amount = from_minor_units(int(session.get("amount_total") or 0), currency)

    try:
        with transaction.atomic():
            # The row lock serialises concurrent deliveries of the same event, so the second
            # sees the first's payment here instead of failing on the unique constraint.
            invoice = Invoice.objects.select_for_update().filter(pk=int(invoice_id)).first()
            if invoice is None:
                return Outcome.UNKNOWN_INVOICE
            if Payment.objects.filter(provider=NAME, reference=session_id).exists():
                return Outcome.DUPLICATE
            # Recorded whatever the invoice's state: the money arrived. One that cannot count
            # toward it (void, another currency, more than was owed) carries a problem the
            # owner sees on the invoice, to refund or re-issue.
            payment = payment_record(
                invoice=invoice,
                amount=amount,
                provider=NAME,
                reference=session_id,
                currency=currency,
            )
    except InvoiceError as exc:
        # Only an amount of zero or less gets here: no money moved, nothing to keep.
        logger.error(
            "Stripe session %s paid %s %s for invoice %s, not recorded: %s",
            session_id,
            amount,
            currency,
            invoice_id,
            exc,
        )
        return Outcome.REFUSED
    except IntegrityError:
        # The unique (provider, reference) constraint: recorded by a concurrent delivery.
        return Outcome.DUPLICATE
    logger.info(
        "Stripe session %s recorded %s %s on invoice %s", session_id, amount, currency, invoice_id
    )
    return Outcome.NEEDS_ATTENTION if payment.problem_code else Outcome.RECORDED
