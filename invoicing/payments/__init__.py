"""Payment providers behind one small interface.

The Pay Now page asks the firm's provider what to offer; the offline provider (the default)
shows the firm's payment instructions and leaves recording the payment to the accountant.
An online provider (Stripe Checkout, say) implements `PaymentProvider` with a `start` that
redirects to the provider and a webhook view that calls `invoicing.services.payment_record`
with the provider's payment id as `reference`, which the unique constraint on
(provider, reference) makes idempotent. Register it in `PROVIDERS` and choose it per firm.
"""

from __future__ import annotations

from invoicing.payments.base import PaymentOffer, PaymentProvider
from invoicing.payments.offline import OfflineProvider

PROVIDERS: dict[str, type[PaymentProvider]] = {OfflineProvider.name: OfflineProvider}


def provider_for_firm(firm_id: int) -> PaymentProvider:
    # One provider today; this is where a firm's choice of online provider will be read.
    return OfflineProvider()


__all__ = ["PROVIDERS", "PaymentOffer", "PaymentProvider", "provider_for_firm"]
