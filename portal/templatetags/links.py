"""``{% url_id 'name' id ... %}``: ``{% url %}`` for links to rows by integer id, for
pages that list many rows (see portal.links)."""

from __future__ import annotations

from django import template

from portal.links import url_id as _url_id

register = template.Library()


@register.simple_tag
def url_id(viewname: str, *args: int) -> str:
    return _url_id(viewname, *args)


@register.filter(is_safe=True)
def clip(value: str, length: int) -> str:
    """``truncatechars`` for one-line previews in long lists, at a fraction of its cost
    (Django's Truncator normalises and translates on each call): the text if it fits in
    ``length`` characters, else its first ``length - 1`` and an ellipsis."""
    value = str(value)
    return value if len(value) <= length else value[: length - 1].rstrip() + "…"
