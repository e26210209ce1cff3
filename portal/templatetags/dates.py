"""``{{ day|short_date }}``: ``{{ day|date:"SHORT_DATE_FORMAT" }}`` for lists of many rows.

A list's dates repeat (a page of 50 invoices holds a few dozen distinct days), and Django's
formatter spends ~20 µs on each, reading its localized format and month names anew. Each day
is formatted once per language; the text is what the ``date`` filter gives.
"""

from __future__ import annotations

import datetime
from functools import lru_cache

from django import template
from django.template.defaultfilters import date as date_filter
from django.utils.formats import date_format
from django.utils.translation import get_language

register = template.Library()


@lru_cache(maxsize=4096)
def _short_date(day: datetime.date, language: str | None) -> str:
    return date_format(day, "SHORT_DATE_FORMAT")


@register.filter(expects_localtime=True, is_safe=False)
def short_date(value: datetime.date | None) -> str:
    if type(value) is not datetime.date:  # a datetime (or nothing): as the date filter does
        return date_filter(value, "SHORT_DATE_FORMAT")
    return _short_date(value, get_language())
