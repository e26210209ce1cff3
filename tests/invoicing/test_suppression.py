"""The firm's list of blocked addresses, and lifting a block."""

from __future__ import annotations

from django.urls import reverse

from invoicing.models import Delivery, DeliveryEvent, Suppression
from invoicing.services import address_problems_lift
from tests.factories import ClientFactory
from tests.invoicing.factories import InvoiceFactory


def _suppressed(firm, address="gone@client.test"):
    client = ClientFactory(firm=firm)
    delivery = Delivery.objects.create(
        firm=firm,
        invoice=InvoiceFactory(client=client),
        client=client,
        address=address,
        normalized=address,
        status=Delivery.Status.BOUNCED,
        problem_code="delivery.hard_bounce",
        verp_token=f"t-{address}",
    )
    event = DeliveryEvent.objects.create(
        delivery=delivery,
        kind="bounced",
        source="smtp",
        reply_code="550",
        status_code="5.1.1",
        diagnostic="User unknown",
    )
    suppression = Suppression.objects.create(
        firm=firm, normalized=address, reason=Suppression.Reason.HARD_BOUNCE, source_event=event
    )
    return suppression, delivery


def test_it_lists_address_reason_and_server_reply(owner_client, firm):
    _suppressed(firm)
    body = owner_client.get(reverse("invoicing:suppressions")).content.decode()
    assert "gone@client.test" in body
    assert "The address does not exist" in body
    assert "5.1.1" in body


def test_staff_cannot_see_the_list(staff_client, firm):
    _suppressed(firm)
    assert staff_client.get(reverse("invoicing:suppressions")).status_code == 403


def test_removal_needs_the_confirmation(owner_client, firm):
    suppression, _ = _suppressed(firm)
    url = reverse("invoicing:suppression_remove", args=[suppression.pk])
    response = owner_client.post(url, {"note": "Phoned Anna"})
    assert response.status_code == 400
    suppression.refresh_from_db()
    assert suppression.removed_at is None


def test_an_owner_removes_a_block_and_it_is_recorded(owner_client, owner, firm):
    suppression, _ = _suppressed(firm)
    url = reverse("invoicing:suppression_remove", args=[suppression.pk])
    response = owner_client.post(
        url, {"confirmed": "on", "note": "Phoned Anna, mailbox fixed"}, follow=True
    )
    assert "gone@client.test is no longer blocked" in response.content.decode()
    suppression.refresh_from_db()
    assert suppression.removed_at is not None
    assert suppression.removed_by == owner.user
    assert suppression.removal_note == "Phoned Anna, mailbox fixed"
    assert not owner_client.get(reverse("invoicing:suppressions")).context["suppressions"]
    history = owner_client.get(reverse("invoicing:suppressions"), {"show": "removed"})
    assert "gone@client.test" in history.content.decode()


def test_an_admin_sees_the_list_but_cannot_remove(firm, admin_member, client):
    suppression, _ = _suppressed(firm)
    client.force_login(admin_member.user)
    assert client.get(reverse("invoicing:suppressions")).status_code == 200
    url = reverse("invoicing:suppression_remove", args=[suppression.pk])
    assert client.post(url, {"confirmed": "on", "note": "x"}).status_code == 403


def test_another_firms_block_is_not_found(outsider_client, firm):
    suppression, _ = _suppressed(firm)
    url = reverse("invoicing:suppression_remove", args=[suppression.pk])
    assert outsider_client.post(url, {"confirmed": "on", "note": "x"}).status_code == 404


def test_fixing_an_address_lifts_its_problems_for_that_client_only(firm):
    _, delivery = _suppressed(firm)
    other_client = ClientFactory(firm=firm)
    elsewhere = Delivery.objects.create(
        firm=firm,
        invoice=InvoiceFactory(client=other_client),
        client=other_client,
        address="gone@client.test",
        normalized="gone@client.test",
        status=Delivery.Status.BOUNCED,
        problem_code="delivery.hard_bounce",
        verp_token="t-elsewhere",
    )
    assert address_problems_lift(client=delivery.client, normalized="gone@client.test") == 1
    delivery.refresh_from_db()
    elsewhere.refresh_from_db()
    assert delivery.problem_code == ""
    assert elsewhere.problem_code == "delivery.hard_bounce"
