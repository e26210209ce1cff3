"""A list's choice labels read as get_FOO_display() gives them, in every language."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.template import engines
from django.utils import translation

from invoicing.models import Invoice
from portal.models import Client

LANGUAGES = [code for code, _name in settings.LANGUAGES]


def _render(source: str, **context) -> str:
    return engines["django"].from_string("{% load labels %}" + source).render(context)


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_invoices_status_label_is_its_display_name(language):
    with translation.override(language):
        for status in Invoice.Status.values:
            invoice = Invoice(status=status)
            expected = _render("{{ invoice.get_status_display }}", invoice=invoice)
            assert _render('{{ invoice|label:"status" }}', invoice=invoice) == expected


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_clients_kind_and_status_labels_are_their_display_names(language):
    with translation.override(language):
        for kind in Client.Kind.values:
            for status in Client.Status.values:
                client = Client(kind=kind, status=status)
                assert _render('{{ c|label:"kind" }}', c=client) == client.get_kind_display()
                assert _render('{{ c|label:"status" }}', c=client) == client.get_status_display()


def test_a_value_without_a_label_shows_as_stored():
    assert _render('{{ invoice|label:"status" }}', invoice=Invoice(status="imported")) == "imported"
