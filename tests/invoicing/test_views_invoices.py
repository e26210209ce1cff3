"""What an accountant reads on the invoice pages: list filters, the delivery timeline, print."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.models import Invoice, Payment
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.invoicing.factories import InvoiceFactory, invoice_with_lines

DAY = datetime.timedelta(days=1)


def _numbers(response) -> list[int]:
    return [invoice.number for invoice in response.context["page"].object_list]


# --- the list's filters -----------------------------------------------------------------


@pytest.fixture
def dated_invoices(firm):
    today = timezone.localdate()
    client = ClientFactory(firm=firm)
    make = InvoiceFactory
    return {
        "old_overdue": make(
            client=client,
            number=1,
            status=Invoice.Status.SENT,
            issue_date=today - 60 * DAY,
            due_date=today - 30 * DAY,
        ),
        "viewed_overdue": make(
            client=client,
            number=2,
            status=Invoice.Status.VIEWED,
            issue_date=today - 20 * DAY,
            due_date=today - DAY,
        ),
        "due_today": make(
            client=client,
            number=3,
            status=Invoice.Status.SENT,
            issue_date=today - 14 * DAY,
            due_date=today,
        ),
        "paid_late": make(
            client=client,
            number=4,
            status=Invoice.Status.PAID,
            issue_date=today - 40 * DAY,
            due_date=today - 10 * DAY,
        ),
        "void_late": make(
            client=client,
            number=5,
            status=Invoice.Status.VOID,
            issue_date=today - 40 * DAY,
            due_date=today - 10 * DAY,
        ),
        "draft": make(client=client, number=6, issue_date=today, due_date=today - DAY),
    }


def test_overdue_lists_only_sent_or_viewed_invoices_past_their_due_date(
    owner_client, dated_invoices
):
    response = owner_client.get(reverse("invoicing:invoice_list"), {"overdue": "on"})
    assert _numbers(response) == [2, 1]
    assert response.content.decode().count('class="badge overdue"') == 2


def test_the_list_filters_by_issue_date_range(owner_client, dated_invoices):
    today = timezone.localdate()
    response = owner_client.get(
        reverse("invoicing:invoice_list"),
        {
            "issued_from": (today - 45 * DAY).isoformat(),
            "issued_to": (today - 14 * DAY).isoformat(),
        },
    )
    assert _numbers(response) == [5, 4, 3, 2]


def test_filters_combine(owner_client, dated_invoices):
    today = timezone.localdate()
    response = owner_client.get(
        reverse("invoicing:invoice_list"),
        {"status": "sent", "overdue": "on", "issued_from": (today - 90 * DAY).isoformat()},
    )
    assert _numbers(response) == [1]


def test_a_date_range_ending_before_it_starts_is_explained(owner_client, dated_invoices):
    response = owner_client.get(
        reverse("invoicing:invoice_list"),
        {"issued_from": "2026-03-10", "issued_to": "2026-03-01"},
    )
    assert "The end date cannot be before the start date." in response.content.decode()


def test_the_filters_show_what_each_request_asked_for(owner_client, dated_invoices):
    url = reverse("invoicing:invoice_list")

    sent = owner_client.get(url, {"status": "sent", "issued_from": "2026-03-10"}).content.decode()
    paid = owner_client.get(url, {"status": "paid", "overdue": "on"}).content.decode()
    plain = owner_client.get(url).content.decode()

    assert '<option value="sent" selected>' in sent and 'value="2026-03-10"' in sent
    assert '<option value="paid" selected>' in paid and 'value="2026-03-10"' not in paid
    assert 'id="id_overdue" checked' in paid
    assert '<option value="" selected>' in plain and 'value="2026-03-10"' not in plain
    assert 'id="id_overdue" checked' not in plain


def test_the_pager_keeps_every_filter(owner_client, firm, settings):
    settings.INVOICES_PER_PAGE = 2
    client = ClientFactory(firm=firm)
    for number in range(1, 6):
        InvoiceFactory(client=client, number=number, status=Invoice.Status.SENT)
    response = owner_client.get(
        reverse("invoicing:invoice_list"),
        {"status": "sent", "client": client.pk, "issued_from": "2000-01-01", "page": 2},
    )
    body = response.content.decode()
    assert f"?status=sent&amp;client={client.pk}&amp;issued_from=2000-01-01&amp;page=3" in body
    assert _numbers(response) == [3, 2]


# --- the invoice page and its delivery timeline -----------------------------------------


def _delivered(invoice, address, **fields):
    return Delivery.objects.create(
        firm=invoice.firm,
        invoice=invoice,
        client=invoice.client,
        address=address,
        normalized=address.lower(),
        verp_token=f"v-{invoice.pk}-{address}",
        **fields,
    )


def test_an_overdue_invoice_says_so(owner_client, firm):
    invoice = invoice_with_lines(
        client=ClientFactory(firm=firm),
        status=Invoice.Status.SENT,
        due_date=timezone.localdate() - DAY,
    )
    body = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert 'class="badge overdue"' in body


def test_the_payment_form_speaks_the_members_language(owner_client, owner, firm):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm), status=Invoice.Status.SENT)
    english = owner_client.get(invoice.get_absolute_url()).content.decode()
    owner.user.language = "fi"
    owner.user.save(update_fields=["language"])

    finnish = owner_client.get(invoice.get_absolute_url()).content.decode()

    assert '<label for="id_amount">Amount received:</label>' in english
    assert "Vastaanotettu summa" in finnish
    assert "Amount received" not in finnish
    assert 'name="amount" min="0.01" step="0.01" required id="id_amount"' in finnish


def test_opened_is_labelled_approximate_on_the_timeline(owner_client, firm):
    client = ClientFactory(firm=firm)
    invoice = invoice_with_lines(client=client, status=Invoice.Status.SENT)
    delivery = _delivered(invoice, "anna@client.test", status=Delivery.Status.OPENED)
    DeliveryEvent.objects.create(delivery=delivery, kind="delivered", source="webhook")
    DeliveryEvent.objects.create(delivery=delivery, kind="opened", source="webhook")
    body = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert body.count("Opened (approximate)") == 2  # the status badge and the event
    assert "<strong>Delivered</strong>" in body
    assert "<strong>opened</strong>" not in body


def test_a_suppressed_send_is_shown_with_the_way_out(owner_client, firm):
    client = ClientFactory(firm=firm)
    invoice = invoice_with_lines(client=client, status=Invoice.Status.SENT)
    ContactAddressFactory(contact=ContactFactory(client=client), address="gone@client.test")
    Suppression.objects.create(
        firm=firm, normalized="gone@client.test", reason=Suppression.Reason.HARD_BOUNCE
    )
    _delivered(
        invoice,
        "gone@client.test",
        status=Delivery.Status.SUPPRESSED,
        problem_code="delivery.suppressed",
    )
    body = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "Not sent: address blocked" in body
    assert "this address is blocked" in body
    assert reverse("invoicing:suppressions") in body
    assert "Resend" in body


def test_an_address_no_longer_on_the_client_points_to_the_corrected_one(owner_client, firm):
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="fixed@client.test")
    invoice = invoice_with_lines(client=client, status=Invoice.Status.SENT)
    old = _delivered(
        invoice,
        "typo@client.test",
        status=Delivery.Status.BOUNCED,
        problem_code="delivery.hard_bounce",
    )
    body = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "This address is no longer on the client." in body
    assert reverse("invoicing:delivery_resend", args=[invoice.pk, old.pk]) in body


# --- send all drafts ----------------------------------------------------------------------


def test_send_all_drafts_says_which_recipients_were_held_back(
    owner_client, firm, django_capture_on_commit_callbacks
):
    client = ClientFactory(firm=firm)
    contact = ContactFactory(client=client)
    ContactAddressFactory(contact=contact, address="gone@client.test")
    ContactAddressFactory(contact=contact, address="ok@client.test", is_primary=False)
    Suppression.objects.create(
        firm=firm, normalized="gone@client.test", reason=Suppression.Reason.HARD_BOUNCE
    )
    invoice_with_lines(client=client)
    with django_capture_on_commit_callbacks(execute=False):
        response = owner_client.post(reverse("invoicing:invoices_send_drafts"), follow=True)
    body = response.content.decode()
    assert "1 invoice is being sent." in body
    assert "1 recipient was not sent to" in body


# --- the printable invoice ----------------------------------------------------------------


@pytest.mark.parametrize(("status", "mark"), [("draft", "Draft"), ("paid", "Paid")])
def test_the_printable_invoice_marks_drafts_and_paid_ones(owner_client, firm, status, mark):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm), status=status)
    body = owner_client.get(reverse("invoicing:invoice_print", args=[invoice.pk])).content
    assert f">{mark}</p>" in body.decode()


def test_paid_so_far_leaves_out_payments_that_do_not_count(owner_client, firm, owner):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm), status="sent", currency="EUR")
    for amount, problem in (("40.00", ""), ("2.50", ""), ("99.00", "payment.currency_mismatch")):
        Payment.objects.create(
            invoice=invoice,
            provider="offline",
            amount=Decimal(amount),
            currency="EUR",
            problem_code=problem,
            recorded_by=owner.user,
        )
    body = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "Paid so far: 42.50 EUR" in body


def test_each_payment_shows_who_recorded_it_in_order(owner_client, firm, owner):
    invoice = invoice_with_lines(client=ClientFactory(firm=firm), status="sent", currency="EUR")
    for amount, reference, recorder in (
        ("10.00", "bank transfer", owner.user),
        ("5.00", "card", None),  # the payment provider's: no member recorded it
    ):
        Payment.objects.create(
            invoice=invoice,
            provider="offline" if recorder else "stripe",
            amount=Decimal(amount),
            currency="EUR",
            reference=reference,
            recorded_by=recorder,
        )
    body = owner_client.get(invoice.get_absolute_url()).content.decode()
    assert "10.00 EUR (bank transfer) · owner@alder.test" in body
    assert "5.00 EUR (card)</li>" in body
    assert body.index("bank transfer") < body.index("(card)")
