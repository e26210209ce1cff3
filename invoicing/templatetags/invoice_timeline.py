"""An invoice's delivery timeline on its page (invoicing.timeline)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from invoicing import timeline
from invoicing.timeline import Flag, RecipientRow

register = template.Library()


@register.simple_tag(takes_context=True)
def timeline_html(
    context: template.Context, rows: list[RecipientRow], flagged: dict[str, Flag]
) -> SafeString:
    """The recipients' rows; ``flagged``: the troubleshooting app's guide for each
    recipient Gmail is likely to warn about ({% flagged_dangerous %})."""
    return timeline.timeline_html(rows, flagged or {}, request=context.request)
