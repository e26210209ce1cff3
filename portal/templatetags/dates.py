"""``{{ day|short_date }}`` and ``{{ moment|datetime_text }}``: the ``date`` filter's text
for lists of many rows, each day and minute formatted once (see portal.dates)."""

from __future__ import annotations

import datetime

from django import template
from django.template.defaultfilters import date as date_filter

from portal import dates

register = template.Library()


@register.filter(expects_localtime=True)
def short_date(value: datetime.date | None) -> str:
    """``value|date:"SHORT_DATE_FORMAT"`` (a datetime comes in local time already)."""
    if not isinstance(value, datetime.date):  # nothing, or text: as the date filter does
        return date_filter(value, "SHORT_DATE_FORMAT")
    return dates.short_date(value)


@register.filter
def datetime_text(value: datetime.datetime | None, format_name: str = "DATETIME_FORMAT") -> str:
    """``value|date:format_name`` (by default as ``{{ value }}`` shows a datetime); ""
    for none."""
    if not isinstance(value, datetime.datetime):
        return date_filter(value, format_name)
    return dates.datetime_text(value, format_name)
