"""The catalogue's wording for other apps' pages.

Apps below troubleshooting record problem codes and may not import it; their templates load
this library (``{% load problems %}``) to show the catalogue's words for a code, so the
catalogue stays the one place a code becomes text.
"""

from __future__ import annotations

from functools import lru_cache

from django import template
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import formats
from django.utils.html import conditional_escape, escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

from mailsync.models import MailboxConnection
from portal.links import url_ids
from troubleshooting import catalogue
from troubleshooting.selectors import flagged_dangerous_addresses

register = template.Library()


@register.filter
def problem_text(code: str) -> str:
    """The one-line wording of a problem code ("" for none)."""
    return catalogue.short_text(code) if code else ""


@register.filter
def check_words(result: dict) -> str:
    return catalogue.check_words(result)


@register.filter
def check_label(name: str) -> str:
    return catalogue.check_label(name)


@register.simple_tag
def guide_link(code: str) -> str:
    """The guide's title, linked to it on the guides page ("" for a code without one)."""
    guide = catalogue.guide_for(code)
    if guide is None:
        return ""
    url = f"{reverse('troubleshooting:guides')}#{guide.code}"
    return format_html('<a class="guide-link" href="{}">{}</a>', url, guide.title)


@register.simple_tag
def guide_text_of(code: str) -> SafeString:
    """The explanation of the catalogue's guide for ``code`` (what, why, who can fix it,
    the steps) as a card shows it."""
    return _guide_html(code, get_language())


@lru_cache(maxsize=512)
def _guide_html(code: str, language: str | None) -> SafeString:
    # The catalogue's words for one code in one language, the same on every card and every
    # page: rendered once per process instead of once per card (a tenth of a page of cards).
    guide = catalogue.guide_for(code)
    return render_to_string("troubleshooting/_guide_text.html", {"guide": guide})


@register.simple_tag
def flagged_dangerous(invoice, timelines) -> dict:
    """{normalized address: guide} for the invoice's recipients Gmail is likely to warn
    about (a fixed number of queries for the whole invoice)."""
    latest = [t.latest for t in timelines if not t.latest.is_test]
    flagged = flagged_dangerous_addresses(invoice.firm, latest)
    guide = catalogue.guide_for("delivery.flagged_dangerous")
    return {address: guide for address in flagged}


@register.filter
def get_item(mapping: dict, key: str):
    return mapping.get(key) if mapping else None


@register.simple_tag
def security_choices() -> list[tuple[str, str]]:
    return MailboxConnection.Security.choices


@register.filter
def technical_rows(rows) -> str:
    """A problem card's technical rows (``Problem.technical``: label, value, preformatted)
    as ``<dt>``/``<dd>`` pairs, values shown as the template would (localized, escaped).
    Joined here: a template loop over them cost more than the rest of a card's details (and
    format_html per row, half of what is left)."""
    html = []
    for label, value, preformatted in rows:
        shown = conditional_escape(value if preformatted else formats.localize(value))
        shown = f"<pre>{shown}</pre>" if preformatted else shown
        html.append(f"<dt>{conditional_escape(label)}</dt><dd>{shown}</dd>")
    return mark_safe("".join(html))  # noqa: S308 (every part escaped above)


@register.filter
def member_options(members: list[tuple[int, str]], chosen: int | None) -> str:
    """The member filter's ``<option>`` elements, the chosen member's selected (a template
    loop over a firm's thirty members took half a millisecond on every Problems page, and
    format_html per member, 70 calls each, a fifth of that)."""
    options = (
        f'<option value="{int(pk)}"{" selected" if pk == chosen else ""}>{escape(name)}</option>'
        for pk, name in members
    )
    return mark_safe("".join(options))  # noqa: S308 (the id is a number, the name escaped)


@register.filter
def client_links(clients) -> str:
    """ "Clients affected" under a problem code: each client's name linked to its Problems
    tab, comma-separated (a template loop over a dashboard's hundred names took 3 ms)."""
    urls = url_ids("troubleshooting:client_problems", [c.pk for c in clients])
    return format_html_join(
        ", ", '<a href="{}">{}</a>', zip(urls, (c.display_name for c in clients), strict=True)
    )
