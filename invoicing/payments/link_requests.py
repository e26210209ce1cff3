"""A client whose Pay Now link expired or was replaced asks the firm for a new one.

The request lands where the fix is: as an event on the delivery's timeline, beside that
address's Resend button, and in an email to the firm's owners and the invoice's author.
Only someone holding a real link can ask, and each link asks at most once a day, so a
reloaded page or a bot cannot flood the firm. The email is sent by a task queued once the
request is recorded: the client's page answers without waiting on the mail server.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone, translation

from accounts.models import Membership, Role
from invoicing.delivery.events import delivery_event_record
from invoicing.delivery.models import Delivery
from invoicing.enqueue import pay_link_request_notify_soon
from invoicing.models import PayLink
from portal.emails import send_templated

logger = logging.getLogger(__name__)

# DeliveryEvent.kind of the request. Not a Delivery.Status: it never changes the delivery's
# state (events.RANK does not know it), it only shows on the timeline.
LINK_REQUESTED = "link_requested"


def pay_link_request_new(*, link: PayLink) -> bool:
    """Record the request and tell the firm; False when this link already asked today."""
    if link.delivery is None:
        return False  # every link the sender makes has a delivery; nothing to record on
    with transaction.atomic():
        event = delivery_event_record(
            delivery=link.delivery,
            kind=LINK_REQUESTED,
            source="portal",
            # The unique (source, event_id) makes "once per link and day" hold under races.
            event_id=f"link-request:{link.pk}:{timezone.localdate().isoformat()}",
            refresh=False,
        )
        if event is None:
            return False
        pay_link_request_notify_soon(delivery_id=link.delivery.pk)
    return True


def pay_link_request_notify(*, delivery_id: int) -> None:
    """Email the firm's owners and the invoice's author that the client asked for a new link."""
    delivery = (
        Delivery.objects.select_related("invoice__firm", "invoice__client")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        return  # gone since (the invoice was deleted): nobody to tell about it
    invoice, address = delivery.invoice, delivery.address
    # The owners and the invoice's author, each in the language they chose for the portal.
    people = (
        Membership.objects.filter(firm_id=invoice.firm_id)
        .filter(Q(role=Role.OWNER) | Q(user_id=invoice.created_by_id))
        .values_list("user__email", "user__language")
        .order_by("user__email")
    )
    by_language: dict[str, list[str]] = {}
    for email, language in people:
        by_language.setdefault(language or settings.LANGUAGE_CODE, []).append(email)
    if not by_language:
        logger.warning("No one to tell about a link request for invoice %s", invoice.pk)
        return
    context = {
        "invoice": invoice,
        "client_name": invoice.client_name or invoice.client.display_name,
        "address": address,
        "link": settings.SITE_URL + invoice.get_absolute_url(),
    }
    for language, recipients in sorted(by_language.items()):
        with translation.override(language):
            send_templated("pay-link-request", to=recipients, context=context, firm=invoice.firm)
