"""Payment providers behind one small interface.

The Pay Now page asks the firm's provider what to offer; the offline provider (the default)
shows the firm's payment instructions and leaves recording the payment to the accountant.
An online provider (Stripe Checkout, say) implements `PaymentProvider` with a `start` that
redirects to the provider and a webhook view that calls `recording.payment_record`
with the provider's payment id as `reference`, which the unique constraint on
(provider, reference) makes idempotent. Register it in `PROVIDERS` and choose it per firm.
"""

from __future__ import annotations

from invoicing.payments.base import PaymentOffer, PaymentProvider
from invoicing.payments.offline import OfflineProvider
from invoicing.payments.stripe import StripeProvider
from invoicing.payments.stripe import is_enabled as stripe_is_enabled

PROVIDERS: dict[str, type[PaymentProvider]] = {
    OfflineProvider.name: OfflineProvider,
    StripeProvider.name: StripeProvider,
}


def provider_for_firm(firm_id: int) -> PaymentProvider:
    # Stripe for every firm once the platform has a key (it keeps the offline instructions
    # beside the card button); this is where a firm's own choice will be read.
    if stripe_is_enabled():
        return StripeProvider()
    return OfflineProvider()


__all__ = ["PROVIDERS", "PaymentOffer", "PaymentProvider", "provider_for_firm"]
