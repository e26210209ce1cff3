"""A delivery's status only moves forward: no event can put a claimed email back in the queue."""

from __future__ import annotations

import secrets

import pytest

from invoicing.delivery.events import delivery_event_record
from invoicing.delivery.models import Delivery
from tests.factories import ClientFactory
from tests.invoicing.factories import invoice_with_lines

S = Delivery.Status


def _delivery(firm, status):
    client = ClientFactory(firm=firm)
    return Delivery.objects.create(
        firm=firm,
        invoice=invoice_with_lines(client=client),
        client=client,
        address="anna@birch.test",
        normalized="anna@birch.test",
        verp_token=secrets.token_hex(8),
        status=status,
    )


@pytest.mark.parametrize("status", [S.SENDING, S.UNKNOWN])
def test_an_esp_queued_event_does_not_put_a_claimed_email_back_in_the_queue(firm, status):
    delivery = _delivery(firm, status)
    delivery_event_record(delivery=delivery, kind=S.QUEUED, source="webhook")
    delivery.refresh_from_db()
    assert delivery.status == status


@pytest.mark.parametrize("kind", [S.SENT, S.DELIVERED, S.BOUNCED, S.DEFERRED])
def test_every_real_outcome_moves_a_claimed_email_on(firm, kind):
    delivery = _delivery(firm, S.SENDING)
    delivery_event_record(delivery=delivery, kind=kind, source="webhook")
    delivery.refresh_from_db()
    assert delivery.status == kind
