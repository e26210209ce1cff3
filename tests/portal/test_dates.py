"""A list's short dates read as Django's date filter writes them, in every language."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.template import engines
from django.utils import formats, timezone, translation

from portal.dates import datetime_text


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


def _moments() -> list[datetime.datetime]:
    """Every 7 minutes of a day, on days across years, month ends and both DST changes."""
    days = [datetime.date(2026, 1, 1) + datetime.timedelta(days=n * 37) for n in range(20)]
    days += [datetime.date(2026, 3, 29), datetime.date(2026, 10, 25), datetime.date(2028, 2, 29)]
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    times = [start + datetime.timedelta(minutes=7 * n, seconds=n % 60) for n in range(206)]
    return [datetime.datetime.combine(day, moment.timetz()) for day in days for moment in times]


@pytest.mark.parametrize("language", [code for code, _name in settings.LANGUAGES])
@pytest.mark.parametrize("format_name", ["DATETIME_FORMAT", "SHORT_DATETIME_FORMAT"])
def test_a_datetime_reads_as_the_date_filter_writes_it(language, format_name):
    with translation.override(language), timezone.override("Europe/Helsinki"):
        for moment in _moments():
            local = timezone.localtime(moment)
            assert datetime_text(moment, format_name) == formats.date_format(local, format_name)


@pytest.mark.parametrize("language", [code for code, _name in settings.LANGUAGES])
def test_a_datetime_s_short_date_reads_as_the_date_filter_writes_it(language):
    with translation.override(language), timezone.override("Pacific/Auckland"):
        for moment in _moments()[::5]:
            expected = _render('{{ moment|date:"SHORT_DATE_FORMAT" }}', moment=moment)
            assert _render("{{ moment|short_date }}", moment=moment) == expected


@pytest.mark.parametrize("format_string", ["Y-m-d H:i:s", "H:i j.n.Y", "c", "r", "N j, P", "D"])
def test_any_format_reads_as_the_date_filter_writes_it(format_string):
    with timezone.override("America/New_York"):
        for moment in _moments()[::17]:
            expected = formats.date_format(timezone.localtime(moment), format_string)
            assert datetime_text(moment, format_string) == expected


def test_the_filter_shows_a_datetime_as_the_page_would():
    moment = datetime.datetime(2026, 3, 9, 23, 30, tzinfo=datetime.UTC)
    with translation.override("pl"), timezone.override("Europe/Warsaw"):
        assert _render("{{ moment|datetime_text }}", moment=moment) == _render(
            "{{ moment }}", moment=moment
        )
        assert _render("{{ none|datetime_text }}", none=None) == ""


def test_no_date_shows_nothing():
    assert _render("{{ day|short_date }}", day=None) == ""
