"""The firm's list of blocked addresses, and lifting a block.

Unblocking is for owners only, asks for the password again (as Editor access does), wants
the address typed again, is limited per firm and day, and leaves an audit entry.
"""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.models import AuditEntry
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.delivery.outbox import address_problems_lift
from invoicing.delivery.suppression import (
    SuppressionRemovalLimitReached,
    suppression_remove_audited,
)
from tests.factories import PASSWORD, ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing import factories
from tests.invoicing.factories import InvoiceFactory, invoice_with_lines
from tests.servers import smtp as smtp_fixtures

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline


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


def _reauthenticate(http):
    http.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    return http


@pytest.fixture
def reauthenticated_owner_client(owner_client):
    return _reauthenticate(owner_client)


def _remove(http, suppression, address=None, note="Phoned Anna, mailbox fixed", **kwargs):
    url = reverse("invoicing:suppression_remove", args=[suppression.pk])
    data = {"address": suppression.normalized if address is None else address, "note": note}
    return http.post(url, data, **kwargs)


def test_it_lists_address_reason_and_server_reply(owner_client, firm):
    _suppressed(firm)
    body = owner_client.get(reverse("invoicing:suppressions")).content.decode()
    assert "gone@client.test" in body
    assert "The address does not exist" in body
    assert "5.1.1" in body


def test_staff_cannot_see_the_list(staff_client, firm):
    _suppressed(firm)
    assert staff_client.get(reverse("invoicing:suppressions")).status_code == 403


def test_the_removal_page_asks_for_the_address_again(owner_client, firm):
    suppression, _ = _suppressed(firm)
    url = reverse("invoicing:suppression_remove", args=[suppression.pk])
    body = owner_client.get(url).content.decode()
    assert "Type the blocked address again" in body
    assert 'name="address"' in body


def test_removal_asks_for_the_password_again_when_not_recently_signed_in(owner_client, firm):
    suppression, _ = _suppressed(firm)
    response = _remove(owner_client, suppression)
    assert response.status_code == 302
    assert reverse("account_reauthenticate") in response["Location"]
    suppression.refresh_from_db()
    assert suppression.removed_at is None
    assert not AuditEntry.objects.exists()


def test_after_the_password_the_removal_goes_through_as_typed(owner_client, owner, firm):
    suppression, _ = _suppressed(firm)
    asked = _remove(owner_client, suppression, note="Anna confirmed by phone")
    response = owner_client.post(asked["Location"], {"password": PASSWORD}, follow=True)
    assert "gone@client.test is no longer blocked" in response.content.decode()
    suppression.refresh_from_db()
    assert suppression.removed_by == owner.user
    assert suppression.removal_note == "Anna confirmed by phone"


def test_an_owner_removes_a_block_and_it_is_recorded(reauthenticated_owner_client, owner, firm):
    suppression, _ = _suppressed(firm)
    response = _remove(reauthenticated_owner_client, suppression, follow=True)
    assert "gone@client.test is no longer blocked" in response.content.decode()
    suppression.refresh_from_db()
    assert suppression.removed_at is not None
    assert suppression.removed_by == owner.user
    assert suppression.removal_note == "Phoned Anna, mailbox fixed"
    listing = reauthenticated_owner_client.get(reverse("invoicing:suppressions"))
    assert not listing.context["suppressions"]
    history = reauthenticated_owner_client.get(
        reverse("invoicing:suppressions"), {"show": "removed"}
    )
    assert "gone@client.test" in history.content.decode()


def test_each_removal_writes_an_audit_entry(reauthenticated_owner_client, owner, firm):
    suppression, _ = _suppressed(firm)
    _remove(reauthenticated_owner_client, suppression)
    entry = AuditEntry.objects.get()
    assert (entry.firm, entry.actor, entry.kind) == (
        firm,
        owner.user,
        AuditEntry.Kind.SUPPRESSION_REMOVED,
    )
    assert entry.object_ref == "gone@client.test"
    assert entry.view_name == "invoicing:suppression_remove"
    assert entry.method == "POST"
    log = reauthenticated_owner_client.get(reverse("accounts:audit_log")).content.decode()
    assert "gone@client.test" in log


def test_the_address_typed_in_another_case_is_accepted(reauthenticated_owner_client, firm):
    suppression, _ = _suppressed(firm)
    _remove(reauthenticated_owner_client, suppression, address="  Gone@CLIENT.test ")
    suppression.refresh_from_db()
    assert suppression.removed_at is not None


@pytest.mark.parametrize("typed", ["", "gone@client.tes", "other@client.test"])
def test_a_wrong_confirmation_is_refused_and_the_form_kept(
    reauthenticated_owner_client, firm, typed
):
    suppression, _ = _suppressed(firm)
    response = _remove(reauthenticated_owner_client, suppression, address=typed, note="Rang Anna")
    assert response.status_code == 400
    body = response.content.decode()
    assert "Rang Anna" in body
    if typed:
        assert "This is not the blocked address" in body
        assert f'value="{typed}"' in body
    suppression.refresh_from_db()
    assert suppression.removed_at is None
    assert not AuditEntry.objects.exists()


def test_an_admin_is_refused_even_after_the_password(firm, admin_member, client):
    suppression, _ = _suppressed(firm)
    client.force_login(admin_member.user)
    _reauthenticate(client)
    assert client.get(reverse("invoicing:suppressions")).status_code == 200
    assert _remove(client, suppression).status_code == 403
    suppression.refresh_from_db()
    assert suppression.removed_at is None


def test_staff_are_refused(staff_client, firm):
    suppression, _ = _suppressed(firm)
    assert _remove(_reauthenticate(staff_client), suppression).status_code == 403


def test_another_firms_block_is_not_found(outsider_client, firm):
    suppression, _ = _suppressed(firm)
    assert _remove(_reauthenticate(outsider_client), suppression).status_code == 404
    suppression.refresh_from_db()
    assert suppression.removed_at is None


def test_the_daily_limit_per_firm_stops_the_next_removal_and_keeps_the_form(
    reauthenticated_owner_client, firm, settings
):
    settings.SUPPRESSION_REMOVALS_PER_DAY = 2
    first, second, third = (_suppressed(firm, f"gone{n}@client.test")[0] for n in range(3))
    with freeze_time("2026-03-02 09:00:00"):
        _remove(_reauthenticate(reauthenticated_owner_client), first)
    with freeze_time("2026-03-02 10:00:00"):
        _reauthenticate(reauthenticated_owner_client)
        _remove(reauthenticated_owner_client, second)
        response = _remove(reauthenticated_owner_client, third, note="Client's IT fixed it")

    assert response.status_code == 429
    body = response.content.decode()
    assert "Your firm can unblock only 2 addresses in 24 hours" in body
    assert 'value="gone2@client.test"' in body
    assert "Client&#x27;s IT fixed it" in body
    third.refresh_from_db()
    assert third.removed_at is None
    assert AuditEntry.objects.count() == 2

    # A day after the first removal, one more is allowed.
    with freeze_time("2026-03-03 09:00:01"):
        _reauthenticate(reauthenticated_owner_client)
        _remove(reauthenticated_owner_client, third)
    third.refresh_from_db()
    assert third.removed_at is not None


def test_the_limit_message_is_in_the_users_language(reauthenticated_owner_client, firm, settings):
    settings.SUPPRESSION_REMOVALS_PER_DAY = 1
    earlier, _ = _suppressed(firm, "earlier@client.test")
    with freeze_time("2026-03-02 09:00:00"):
        Suppression.objects.filter(pk=earlier.pk).update(removed_at=timezone.now())
    suppression, _ = _suppressed(firm)
    with freeze_time("2026-03-02 10:00:00"):
        _reauthenticate(reauthenticated_owner_client)
        response = _remove(reauthenticated_owner_client, suppression, HTTP_ACCEPT_LANGUAGE="fi")
    assert response.status_code == 429
    body = response.content.decode()
    assert '<html lang="fi">' in body
    # The time the next removal is allowed, written the Finnish way (the sentence around it
    # is a gettext message like every other).
    assert "3.3.2026" in body


def test_the_limit_counts_only_this_firms_removals(
    reauthenticated_owner_client, firm, outsider, settings
):
    settings.SUPPRESSION_REMOVALS_PER_DAY = 1
    elsewhere, _ = _suppressed(outsider.firm, "theirs@client.test")
    Suppression.objects.filter(pk=elsewhere.pk).update(removed_at=timezone.now())
    suppression, _ = _suppressed(firm)
    assert _remove(reauthenticated_owner_client, suppression).status_code == 302
    suppression.refresh_from_db()
    assert suppression.removed_at is not None


def test_sending_to_the_address_works_again_after_removal(
    reauthenticated_owner_client,
    firm,
    smtp,
    settings,
    tasks_run_inline,
    django_capture_on_commit_callbacks,
):
    settings.DEFAULT_FROM_EMAIL = "Practice Portal <no-reply@portal.test>"
    settings.BOUNCE_ADDRESS = ""
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@client.test")
    suppression = Suppression.objects.create(
        firm=firm, normalized="anna@client.test", reason=Suppression.Reason.HARD_BOUNCE
    )
    invoice = invoice_with_lines(client=client)
    http = reauthenticated_owner_client
    send_url = reverse("invoicing:invoice_send", args=[invoice.pk])

    with django_capture_on_commit_callbacks(execute=True):
        http.post(send_url)
    skipped = Delivery.objects.get()
    assert skipped.status == Delivery.Status.SUPPRESSED
    assert smtp.received == []

    _remove(http, suppression)
    with django_capture_on_commit_callbacks(execute=True):
        http.post(send_url)

    assert [r.rcpt_tos for r in smtp.received] == [["anna@client.test"]]
    assert Delivery.objects.exclude(pk=skipped.pk).get().status == Delivery.Status.SENT


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


def test_a_block_already_lifted_is_not_lifted_twice(reauthenticated_owner_client, firm):
    suppression, _ = _suppressed(firm)
    lifted_at = timezone.now() - datetime.timedelta(hours=2)
    Suppression.objects.filter(pk=suppression.pk).update(removed_at=lifted_at)
    response = _remove(reauthenticated_owner_client, suppression, follow=True)
    assert "gone@client.test is no longer blocked" in response.content.decode()
    suppression.refresh_from_db()
    assert suppression.removed_at == lifted_at
    assert not AuditEntry.objects.exists()


# --- the service behind the page ----------------------------------------------------------


def test_the_removal_service_lifts_the_block_and_audits_it_in_one_go(owner, firm):
    suppression, _ = _suppressed(firm)
    path = reverse("invoicing:suppression_remove", args=[suppression.pk])

    removed = suppression_remove_audited(
        suppression=suppression, removed_by=owner.user, note="Anna confirmed", path=path
    )

    assert removed is True
    suppression.refresh_from_db()
    assert (suppression.removed_by, suppression.removal_note) == (owner.user, "Anna confirmed")
    entry = AuditEntry.objects.get()
    assert (entry.firm, entry.actor, entry.kind, entry.path, entry.object_ref) == (
        firm,
        owner.user,
        AuditEntry.Kind.SUPPRESSION_REMOVED,
        path,
        "gone@client.test",
    )
    # Lifted already: nothing more happens, nothing more is audited.
    again = suppression_remove_audited(suppression=suppression, removed_by=owner.user, note="")
    assert again is False
    assert AuditEntry.objects.count() == 1


def test_the_removal_service_refuses_past_the_limit_and_says_when_to_retry(owner, firm, settings):
    settings.SUPPRESSION_REMOVALS_PER_DAY = 1
    first, second = (_suppressed(firm, f"gone{n}@client.test")[0] for n in range(2))
    with freeze_time("2026-03-02 09:00:00"):
        suppression_remove_audited(suppression=first, removed_by=owner.user, note="")
    with (
        freeze_time("2026-03-02 10:00:00"),
        pytest.raises(SuppressionRemovalLimitReached) as refused,
    ):
        suppression_remove_audited(suppression=second, removed_by=owner.user, note="")

    assert refused.value.retry_at == datetime.datetime(2026, 3, 3, 9, 0, tzinfo=datetime.UTC)
    assert "Your firm can unblock only 1 address in 24 hours" in str(refused.value)
    second.refresh_from_db()
    assert second.removed_at is None
    assert AuditEntry.objects.count() == 1
