from __future__ import annotations

import datetime
from collections.abc import Iterator
from decimal import Decimal

import factory
import pytest

from invoicing.models import Invoice, InvoiceLine
from tests.factories import ClientFactory


class InvoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invoice

    client = factory.SubFactory(ClientFactory)
    firm = factory.LazyAttribute(lambda o: o.client.firm)
    number = factory.Sequence(lambda n: n + 1)
    due_date = factory.LazyFunction(lambda: datetime.date.today() + datetime.timedelta(days=14))
    client_name = factory.LazyAttribute(lambda o: o.client.display_name)


class InvoiceLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InvoiceLine

    invoice = factory.SubFactory(InvoiceFactory)
    description = factory.Sequence(lambda n: f"Bookkeeping, month {n}")
    quantity = Decimal("1.00")
    unit_price = Decimal("100.00")


def invoice_with_lines(*, client, lines: int = 2, **kwargs: object) -> Invoice:
    invoice = InvoiceFactory(client=client, **kwargs)
    InvoiceLineFactory.create_batch(lines, invoice=invoice)
    return invoice


@pytest.fixture
def tasks_run_inline() -> Iterator[None]:
    """Celery runs tasks in the calling process, so a test sees what a worker would do."""
    from portal.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False
        app.conf.task_eager_propagates = False
