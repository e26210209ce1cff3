"""The rows of long lists, rendered once for what they show.

A page of 50 emails spent about 6 ms in its template on every view, working out each row's
links, dates and labels again although no row had changed. Here a row is a frozen dataclass
holding everything its template reads (the template is given the row and nothing else), so
its HTML is a pure function of the row, the language, the time zone and the URL prefix:
`rendered_rows` keeps that HTML in each process, in a bounded LRU keyed by exactly those.
Nothing needs forgetting: a changed row is another key, and a process holds only HTML made
by its own templates and code.

Not for rows that carry a form (a CSRF token belongs to one person) or read the request.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.template.loader import get_template
from django.urls import get_script_prefix, get_urlconf
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

# About a kilobyte each: at most ~20 MB of HTML per process.
ROWS_KEPT = 20_000


def rendered_rows(template_name: str, rows: Iterable[Hashable]) -> list[SafeString]:
    """Each row rendered by ``template_name`` (which reads ``row`` and nothing else)."""
    if settings.DEBUG:
        # A developer edits templates while the server runs: render them as they are now.
        template = get_template(template_name)
        return [mark_safe(template.render({"row": row})) for row in rows]  # noqa: S308
    where = (get_language(), timezone.get_current_timezone_name(), get_script_prefix())
    return [_rendered(template_name, row, *where, get_urlconf()) for row in rows]


@lru_cache(maxsize=ROWS_KEPT)
def _rendered(
    template_name: str,
    row: Hashable,
    language: str | None,
    zone: str,
    prefix: str,
    urlconf: str | None,
) -> SafeString:
    # Rendered under the language, time zone and prefix the key names: the caller's own.
    return mark_safe(get_template(template_name).render({"row": row}))  # noqa: S308


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    """Formats, templates or URLs may read differently now (tests change settings)."""
    _rendered.cache_clear()
