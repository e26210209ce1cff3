"""Dates and times as Django's ``date`` filter writes them, for pages that show many.

Django formats each value anew: it looks up the localized format and the month names and
walks the format string every time (about 20 µs for a date, 40-80 µs for a date and time);
a page of 50 emails spent 4 ms on their dates. Here a day is formatted once per format and
language, and a date-and-time format is split once into its date half and its time half,
each formatted once per day or per minute. The text is the ``date`` filter's (the tests
compare every minute of a day, over several years' worth of days, in every language).
"""

from __future__ import annotations

import datetime
import re
from functools import lru_cache

from django.utils import dateformat, formats, timezone
from django.utils.translation import get_language

# Django's own pattern for the format characters (django.utils.dateformat.re_formatchars).
_FORMAT_CHARS = re.compile(r"(?<!\\)([aAbcdDeEfFgGhHiIjlLmMnNoOPrsStTUuwWyYzZ])")
_TIME = frozenset("aAfgGhHiPsu")
# Characters that read the time zone or the whole moment: such formats are not split.
_WHOLE = frozenset("ceIOrTUZ")


@lru_cache(maxsize=64)
def _halves(format_string: str) -> tuple[str, str, bool] | None:
    """(date half, time half, whether the time half shows seconds) of a format whose date
    characters all come before its time characters; None for any other."""
    found = [(m.start(), m.group(1)) for m in _FORMAT_CHARS.finditer(format_string)]
    if any(char in _WHOLE for _at, char in found):
        return None
    split = next((at for at, char in found if char in _TIME), None)
    if split is None or any(char not in _TIME for at, char in found if at > split):
        return None
    time_half = format_string[split:]
    seconds = any(char in "su" for at, char in found if at >= split)
    return format_string[:split], time_half, seconds


@lru_cache(maxsize=8192)
def _date_text(day: datetime.date, format_string: str, language: str | None) -> str:
    return dateformat.format(day, format_string)


@lru_cache(maxsize=8192)
def _time_text(moment: datetime.time, format_string: str, language: str | None) -> str:
    return dateformat.time_format(moment, format_string)


@lru_cache(maxsize=64)
def _date_only(format_string: str) -> bool:
    """Whether a format reads nothing of a moment but its day (no time, no time zone)."""
    return not any(c in _TIME or c in _WHOLE for c in _FORMAT_CHARS.findall(format_string))


def short_date(day: datetime.date) -> str:
    """``{{ day|date:"SHORT_DATE_FORMAT" }}`` for a date, or for a datetime already in the
    time zone it is shown in (the day it falls on there)."""
    format_string = formats.get_format("SHORT_DATE_FORMAT")
    if isinstance(day, datetime.datetime):
        if not _date_only(format_string):
            return dateformat.format(day, format_string)
        day = day.date()
    return _date_text(day, format_string, get_language())


def datetime_text(value: datetime.datetime, format_name: str = "DATETIME_FORMAT") -> str:
    """``{{ value|date:format_name }}`` for a datetime, in the current time zone."""
    local = timezone.template_localtime(value)
    halves = _halves(formats.get_format(format_name))
    if halves is None:
        return formats.date_format(local, format_name)
    date_half, time_half, seconds = halves
    language = get_language()
    moment = local.time() if seconds else datetime.time(local.hour, local.minute)
    return _date_text(local.date(), date_half, language) + _time_text(moment, time_half, language)
