"""A list's short dates read as Django's date filter writes them, in every language."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.template import engines
from django.utils import timezone, translation

from invoicing.models import Invoice


def _render(source: str, **context) -> str:
    return engines["django"].from_string("{% load dates %}" + source).render(context)


@pytest.mark.parametrize("language", [code for code, _name in settings.LANGUAGES])
def test_a_short_date_is_what_the_date_filter_writes(language):
    day = datetime.date(2026, 3, 9)
    with translation.override(language):
        expected = _render('{{ day|date:"SHORT_DATE_FORMAT" }}', day=day)
        assert _render("{{ day|short_date }}", day=day) == expected
        assert _render("{{ day|short_date }}", day=day) == expected  # remembered


def test_a_short_date_follows_the_language_it_is_shown_in():
    day = datetime.date(2026, 3, 9)
    with translation.override("en"):
        english = _render("{{ day|short_date }}", day=day)
    with translation.override("fi"):
        assert _render("{{ day|short_date }}", day=day) != english


def test_a_datetime_is_shown_on_its_local_day():
    moment = datetime.datetime(2026, 3, 9, 23, 30, tzinfo=datetime.UTC)
    with timezone.override("Europe/Helsinki"):
        expected = _render('{{ moment|date:"SHORT_DATE_FORMAT" }}', moment=moment)
        assert _render("{{ moment|short_date }}", moment=moment) == expected


def test_no_date_shows_nothing():
    assert _render("{{ day|short_date }}", day=None) == ""


@pytest.mark.parametrize("language", [code for code, _name in settings.LANGUAGES])
def test_an_invoices_status_label_is_its_display_name(language):
    with translation.override(language):
        for status in Invoice.Status.values:
            invoice = Invoice(status=status)
            assert invoice.status_label == invoice.get_status_display()
