"""The rows of long lists, rendered once for what they show.

A page of 50 emails spent about 6 ms in its template on every view, working out each row's
links, dates and labels again although no row had changed. Here a row is a frozen dataclass
holding everything its template reads (the template is given the row and nothing else), so
its HTML is a pure function of the row, the language, the time zone and the URL prefix:
`rendered_rows` keeps that HTML in each process, in a bounded LRU keyed by exactly those.
Nothing needs forgetting: a changed row is another key, and a process holds only HTML made
by its own templates and code.

A row may carry forms: its ``{% csrf_token %}`` is rendered as a stand-in, and each page
puts its own request's token in its place (the token belongs to one person; the HTML is
everyone's). Anything else of the request a row shows (the page's path, the member's role)
belongs in the row.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.template.loader import get_template
from django.urls import get_script_prefix, get_urlconf
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

logger = logging.getLogger(__name__)

# A list row is about a kilobyte of HTML, a problem card four: 10-40 MB per process at most,
# some 200 pages of 50 rows.
ROWS_KEPT = 10_000
# The CSRF token's stand-in while a row is rendered for everyone: hex like a token, and
# drawn afresh by each process, so that no content can spell it.
_CSRF_SLOT = secrets.token_hex(20)


def rendered_rows(
    template_name: str, rows: Iterable[Hashable], *, request: HttpRequest | None = None
) -> list[SafeString]:
    """Each row rendered by ``template_name`` (which reads ``row`` and nothing else);
    ``request``: the page's, whose CSRF token the rows' forms carry."""
    if settings.DEBUG:
        # A developer edits templates while the server runs: render them as they are now.
        html = [_render(template_name, row) for row in rows]
    else:
        where = (
            get_language(),
            timezone.get_current_timezone_name(),
            get_script_prefix(),
            get_urlconf(),
        )
        html = [_rendered_or_not(template_name, row, where) for row in rows]
    if request is None:
        return html
    token = get_token(request)
    return [mark_safe(text.replace(_CSRF_SLOT, token)) for text in html]  # noqa: S308


def rendered_row_groups(
    template_name: str,
    groups: Iterable[Sequence[Hashable]],
    *,
    request: HttpRequest | None = None,
) -> list[list[SafeString]]:
    """``rendered_rows`` of each group of rows (a page of several lists: an Email tab's
    threads, the Problems page's codes), in one pass: the language, time zone and CSRF
    token are read once for the page, not once for each group."""
    groups = list(groups)
    html = rendered_rows(template_name, [row for group in groups for row in group], request=request)
    rendered, start = [], 0
    for group in groups:
        rendered.append(html[start : start + len(group)])
        start += len(group)
    return rendered


def _rendered_or_not(template_name: str, row: Hashable, where: tuple) -> SafeString:
    try:
        return _rendered(template_name, row, *where)
    except TypeError:
        try:
            hash(row)
        except TypeError:
            # A row holding something unhashable (a list, a dict) is a bug in its builder:
            # the page still shows it, rendered afresh, and the log says which row.
            logger.warning("row not kept, unhashable: %s", type(row).__name__)
            return _render(template_name, row)
        raise  # the template's own error


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
    return _render(template_name, row)


def _render(template_name: str, row: Hashable) -> SafeString:
    return get_template(template_name).render({"row": row, "csrf_token": _CSRF_SLOT})


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    """Formats, templates or URLs may read differently now (tests change settings)."""
    _rendered.cache_clear()
