"""`Delivery.superseded`, the stored "a later delivery to this client address exists" that
the Problems dashboard counts by, always equals what the deliveries say: after sends one
by one or in bulk, test sends, bounces and deleted invoices."""

from __future__ import annotations

import pytest
from django.db.models import Exists, OuterRef
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoicing.delivery.events import classify_reply, delivery_event_record
from invoicing.delivery.models import Delivery
from invoicing.delivery.outbox import deliveries_prepare_many, delivery_prepare
from invoicing.delivery.suppression import active_suppression, suppression_remove
from invoicing.models import Invoice
from tests.factories import (
    ClientFactory,
    ContactAddressFactory,
    ContactFactory,
    FirmFactory,
    UserFactory,
)
from tests.invoicing.factories import InvoiceFactory
from troubleshooting.selectors import dashboard_groups, problems_for_client

pytestmark = pytest.mark.django_db

ADDRESSES = ["anna@birch.test", "bob@birch.test"]


def _bounce(delivery: Delivery) -> None:
    text = "550 5.1.1 <x>: Recipient address rejected: User unknown"
    outcome = classify_reply("550", "5.1.1", text, command="RCPT")
    delivery_event_record(
        delivery=delivery,
        kind=outcome.kind,
        source="smtp",
        reply_code="550",
        status_code="5.1.1",
        reason=outcome.reason,
        diagnostic=text,
        problem_code=outcome.problem_code,
    )


def _assert_superseded_matches_the_deliveries(firm) -> None:
    newer = Delivery.objects.filter(
        client_id=OuterRef("client_id"),
        normalized=OuterRef("normalized"),
        is_test=False,
        created__gt=OuterRef("created"),
    )
    for pk, stored, computed in (
        Delivery.objects.filter(firm=firm)
        .annotate(computed=Exists(newer))
        .values_list("pk", "superseded", "computed")
    ):
        assert stored == computed, f"delivery {pk}: superseded={stored}"


STEP = st.one_of(
    st.tuples(
        st.just("send"), st.integers(0, 1), st.sampled_from(ADDRESSES), st.booleans()
    ),  # (client, address, test send)
    st.tuples(
        st.just("send in bulk"),
        st.lists(st.tuples(st.integers(0, 1), st.sampled_from(ADDRESSES)), min_size=1, max_size=4),
    ),
    st.tuples(st.just("bounce the newest"), st.integers(0, 1)),
    st.tuples(st.just("delete the newest invoice"), st.integers(0, 1)),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, min_size=1, max_size=8))
def test_superseded_equals_a_newer_real_delivery_to_the_client_address(steps):
    firm = FirmFactory()
    clients = [ClientFactory(firm=firm), ClientFactory(firm=firm)]
    for step in steps:
        kind = step[0]
        if kind == "send":
            _kind, client, address, is_test = step
            invoice = InvoiceFactory(client=clients[client])
            delivery_prepare(invoice=invoice, address=address, normalized=address, is_test=is_test)
        elif kind == "send in bulk":
            deliveries_prepare_many(
                targets=[
                    (InvoiceFactory(client=clients[client]), address, address)
                    for client, address in step[1]
                ]
            )
        elif kind == "bounce the newest":
            newest = Delivery.objects.filter(client=clients[step[1]]).order_by("-created").first()
            if newest is not None:
                _bounce(newest)
        else:
            newest = Invoice.objects.filter(client=clients[step[1]]).order_by("-pk").first()
            if newest is not None:
                newest.delete()
        _assert_superseded_matches_the_deliveries(firm)


def test_bounce_then_resend_then_delivered_clears_the_current_problem():
    firm = FirmFactory()
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address=ADDRESSES[0])
    bounced = delivery_prepare(
        invoice=InvoiceFactory(client=client), address=ADDRESSES[0], normalized=ADDRESSES[0]
    )
    _bounce(bounced)
    assert [p.code for p in problems_for_client(client)] == ["delivery.hard_bounce"]
    assert [g.count for g in dashboard_groups(firm, kind="delivery")] == [1]

    # The owner confirmed the address works and unblocked it, then sent again.
    suppression_remove(
        suppression=active_suppression(firm_id=firm.pk, normalized=ADDRESSES[0]),
        removed_by=UserFactory(),
        note="checked with the client",
    )
    resent = delivery_prepare(
        invoice=bounced.invoice, address=ADDRESSES[0], normalized=ADDRESSES[0]
    )
    delivery_event_record(delivery=resent, kind="delivered", source="webhook")

    bounced.refresh_from_db()
    assert bounced.superseded
    assert problems_for_client(client) == []
    assert dashboard_groups(firm, kind="delivery") == []


def test_a_test_send_does_not_clear_a_problem():
    firm = FirmFactory()
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address=ADDRESSES[0])
    bounced = delivery_prepare(
        invoice=InvoiceFactory(client=client), address=ADDRESSES[0], normalized=ADDRESSES[0]
    )
    _bounce(bounced)

    delivery_prepare(
        invoice=bounced.invoice, address=ADDRESSES[0], normalized=ADDRESSES[0], is_test=True
    )

    assert [p.code for p in problems_for_client(client)] == ["delivery.hard_bounce"]
