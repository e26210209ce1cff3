from __future__ import annotations

from typing import TYPE_CHECKING

from invoicing.payments.base import PaymentOffer, PaymentProvider

if TYPE_CHECKING:
    from invoicing.models import Invoice


class OfflineProvider(PaymentProvider):
    """Bank transfer or cash: the client reads the instructions, the accountant records it."""

    name = "offline"

    def offer(self, *, invoice: Invoice) -> PaymentOffer:
        from invoicing.selectors import billing_settings_get

        settings = billing_settings_get(firm=invoice.firm)
        return PaymentOffer(
            template="invoicing/payments/offline.html",
            context={
                "instructions": settings.payment_instructions,
                "bank_details": settings.bank_details,
                "billing": settings,  # the page shows the firm's details from it too
                "invoice": invoice,
            },
        )
