"""The Problems dashboard's delivery counts come from the cache while nothing they read has
changed, and are counted again the moment anything has: the database raises the firm's
DeliveryProblemsVersion on every such write, whoever writes it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from invoicing.delivery.models import Delivery
from invoicing.models import Invoice, InvoiceLine
from portal.models import Client, Contact, ContactAddress
from tests.db_locks import only_on_postgresql
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, FirmFactory
from tests.invoicing.factories import invoice_with_lines
from tests.troubleshooting.test_problem_pages import _bounce, _delivery
from troubleshooting.models import AddressDomainCheck, DeliveryProblemsVersion
from troubleshooting.selectors import dashboard_groups

pytestmark = pytest.mark.django_db

COUNTS_SQL = "OVER (PARTITION BY"  # the windowed count per code


def _counts(firm) -> dict[str, tuple[int, list[str]]]:
    return {
        group.guide.code: (group.count, [c.display_name for c in group.clients])
        for group in dashboard_groups(firm, kind="delivery")
    }


def _bounced(firm, name: str, address: str) -> Client:
    client = ClientFactory(firm=firm, display_name=name)
    _bounce(_delivery(client, address))
    return client


def _counted(firm) -> bool:
    """Whether showing the dashboard's delivery part counted in SQL (not from the cache)."""
    with CaptureQueriesContext(connection) as captured:
        dashboard_groups(firm, kind="delivery")
    return any(COUNTS_SQL in query["sql"] for query in captured.captured_queries)


def test_a_second_look_reads_the_counts_from_the_cache(firm):
    _bounced(firm, "Birch Dental", "anna@birch.test")

    assert _counted(firm)
    assert not _counted(firm)


def test_the_dashboard_page_reads_the_counts_once(owner_client, firm):
    _bounced(firm, "Birch Dental", "anna@birch.test")
    url = reverse("troubleshooting:dashboard")
    owner_client.get(url)

    with CaptureQueriesContext(connection) as captured:
        page = owner_client.get(url).content.decode()

    assert "Birch Dental" in page
    assert not any(COUNTS_SQL in query["sql"] for query in captured.captured_queries)


def test_a_new_bounce_is_counted_at_once(firm):
    _bounced(firm, "Birch Dental", "anna@birch.test")
    assert _counts(firm)["delivery.hard_bounce"][0] == 1

    _bounced(firm, "Maple Bakery", "ola@maple.test")

    assert _counts(firm)["delivery.hard_bounce"] == (2, ["Birch Dental", "Maple Bakery"])


def test_a_problem_cleared_by_an_update_is_gone_at_once(firm):
    client = _bounced(firm, "Birch Dental", "anna@birch.test")
    assert "delivery.hard_bounce" in _counts(firm)

    Delivery.objects.filter(client=client).update(problem_code="")  # as the sender does

    assert "delivery.hard_bounce" not in _counts(firm)


def test_removing_the_address_from_the_client_lifts_its_problem_at_once(firm):
    client = _bounced(firm, "Birch Dental", "anna@birch.test")
    assert "delivery.hard_bounce" in _counts(firm)

    ContactAddress.objects.filter(contact__client=client).delete()

    assert "delivery.hard_bounce" not in _counts(firm)


def test_a_renamed_client_shows_under_its_new_name_at_once(firm):
    client = _bounced(firm, "Birch Dental", "anna@birch.test")
    assert _counts(firm)["delivery.hard_bounce"][1] == ["Birch Dental"]

    Client.objects.filter(pk=client.pk).update(display_name="Birch Dental Care")

    assert _counts(firm)["delivery.hard_bounce"][1] == ["Birch Dental Care"]


def test_a_contact_moved_to_another_client_takes_the_problem_away_at_once(firm):
    client = _bounced(firm, "Birch Dental", "anna@birch.test")
    other = ClientFactory(firm=firm, display_name="Maple Bakery")
    assert "delivery.hard_bounce" in _counts(firm)

    Contact.objects.filter(client=client).update(client=other)

    assert "delivery.hard_bounce" not in _counts(firm)


def test_a_domain_found_dead_counts_its_addresses_at_once(firm):
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    ContactAddressFactory(contact=ContactFactory(client=client), address="anna@gone.test")
    assert "delivery.invalid_address" not in _counts(firm)

    AddressDomainCheck.objects.create(
        firm=firm, domain="gone.test", ok=False, summary="No MX.", checked=timezone.now()
    )
    assert _counts(firm)["delivery.invalid_address"] == (1, ["Birch Dental"])

    AddressDomainCheck.objects.filter(firm=firm).update(ok=True)
    assert "delivery.invalid_address" not in _counts(firm)


def test_another_firms_changes_leave_the_cached_counts_in_place(firm):
    _bounced(firm, "Birch Dental", "anna@birch.test")
    assert _counted(firm)

    _bounced(FirmFactory(), "Elsewhere Ltd", "x@elsewhere.test")

    assert not _counted(firm)


def test_a_status_change_without_a_problem_change_leaves_the_cached_counts_in_place(firm):
    client = _bounced(firm, "Birch Dental", "anna@birch.test")
    assert _counted(firm)

    Delivery.objects.filter(client=client).update(updated=timezone.now() + timedelta(seconds=1))

    assert not _counted(firm)


# --- clients nobody can send invoices to (counted with the delivery problems) ---------

NO_RECIPIENT = "delivery.not_sent_rejected_document"


def _unreachable(firm, name: str) -> Client:
    """A client whose only address does not receive invoices."""
    client = ClientFactory(firm=firm, display_name=name)
    ContactAddressFactory(
        contact=ContactFactory(client=client), address="anna@birch.test", receives_invoices=False
    )
    return client


def test_a_draft_for_a_client_nobody_can_receive_counts_at_once(firm):
    client = _unreachable(firm, "Birch Dental")
    assert NO_RECIPIENT not in _counts(firm)

    invoice_with_lines(client=client)

    assert _counts(firm)[NO_RECIPIENT] == (1, ["Birch Dental"])


def test_an_address_that_receives_invoices_lifts_the_client_at_once(firm):
    client = _unreachable(firm, "Birch Dental")
    invoice_with_lines(client=client)
    assert NO_RECIPIENT in _counts(firm)

    ContactAddress.objects.filter(contact__client=client).update(receives_invoices=True)

    assert NO_RECIPIENT not in _counts(firm)


def test_a_voided_draft_lifts_the_client_at_once(firm):
    client = _unreachable(firm, "Birch Dental")
    invoice = invoice_with_lines(client=client)
    assert NO_RECIPIENT in _counts(firm)

    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.VOID)

    assert NO_RECIPIENT not in _counts(firm)


def test_a_draft_left_without_lines_lifts_the_client_at_once(firm):
    client = _unreachable(firm, "Birch Dental")
    invoice = invoice_with_lines(client=client)
    assert NO_RECIPIENT in _counts(firm)

    InvoiceLine.objects.filter(invoice=invoice).delete()

    assert NO_RECIPIENT not in _counts(firm)


def test_invoices_of_clients_that_can_receive_them_leave_the_cached_counts_in_place(firm):
    _bounced(firm, "Birch Dental", "anna@birch.test")
    client = ClientFactory(firm=firm, display_name="Maple Bakery")
    ContactAddressFactory(contact=ContactFactory(client=client), address="ola@maple.test")
    assert _counted(firm)

    invoice = invoice_with_lines(client=client)
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.SENT)

    assert not _counted(firm)


# --- committed by other transactions (real commits: the triggers are deferred) -------------
# PostgreSQL only: SQLite has one writer at a time and raises the version at once.
postgresql_only = only_on_postgresql("deferred triggers and concurrent writers")


def _version(firm_pk: int) -> int:
    row = DeliveryProblemsVersion.objects.filter(firm_id=firm_pk).first()
    return row.version if row else 0


def _read_version(firm_pk: int, seen: list[int]) -> None:
    """In another thread: another connection, outside the writer's transaction."""
    try:
        seen.append(_version(firm_pk))
    finally:
        connection.close()


def _commit_at_once(writes: Iterable[Callable[[], object]]) -> None:
    """Run each write in a transaction of its own thread; all of them hold what they wrote
    until every one has written, then commit together. A thread's error fails the test."""
    writes = list(writes)
    all_written = threading.Barrier(len(writes))
    errors: list[BaseException] = []

    def run(write: Callable[[], object]) -> None:
        try:
            with transaction.atomic():
                write()
                all_written.wait(timeout=10)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(write,)) for write in writes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_version_is_raised_when_the_writer_commits_not_before():
    firm = FirmFactory()
    client = ClientFactory(firm=firm)
    delivery = _delivery(client, "anna@birch.test")
    before = _version(firm.pk)
    seen_inside: list[int] = []

    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(problem_code="delivery.hard_bounce")
        reader = threading.Thread(target=_read_version, args=(firm.pk, seen_inside))
        reader.start()
        reader.join()

    assert seen_inside == [before]
    assert _version(firm.pk) == before + 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_writer_that_fails_midway_leaves_the_version_and_the_cached_counts_alone():
    firm = FirmFactory()
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    delivery = _delivery(client, "anna@birch.test")
    Delivery.objects.filter(pk=delivery.pk).update(problem_code="delivery.hard_bounce")
    assert _counted(firm)
    before = _version(firm.pk)

    with pytest.raises(RuntimeError), transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(problem_code="")
        raise RuntimeError("the worker dies before its commit")

    assert _version(firm.pk) == before
    assert not _counted(firm)
    assert _counts(firm)["delivery.hard_bounce"][0] == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_writers_of_one_firm_committing_at_once_each_raise_the_version():
    firm = FirmFactory()
    clients = [ClientFactory(firm=firm) for _ in range(2)]
    deliveries = [_delivery(client, f"p{n}@birch.test") for n, client in enumerate(clients)]
    before = _version(firm.pk)

    _commit_at_once(
        lambda delivery=delivery: Delivery.objects.filter(pk=delivery.pk).update(
            problem_code="delivery.hard_bounce"
        )
        for delivery in deliveries
    )

    assert _version(firm.pk) == before + 2
    assert _counts(firm)["delivery.hard_bounce"][0] == 2


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_drafts_for_clients_nobody_can_receive_committed_at_once_are_both_counted():
    firm = FirmFactory()
    clients = [_unreachable(firm, f"Client {n}") for n in range(2)]
    assert NO_RECIPIENT not in _counts(firm)  # cached under the version before the drafts
    before = _version(firm.pk)

    _commit_at_once(lambda client=client: invoice_with_lines(client=client) for client in clients)

    assert _version(firm.pk) >= before + 2  # an invoice and its lines raise it each
    assert _counts(firm)[NO_RECIPIENT] == (2, ["Client 0", "Client 1"])
