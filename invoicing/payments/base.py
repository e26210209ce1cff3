from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from invoicing.models import Invoice


@dataclass(frozen=True)
class PaymentOffer:
    """What the Pay Now page shows the client: a template to include and its context."""

    template: str
    context: dict[str, object]


class PaymentProvider:
    """One way a client can pay. Rendering an offer never changes payment state."""

    name: ClassVar[str]

    def offer(self, *, invoice: Invoice) -> PaymentOffer:
        raise NotImplementedError
