"""``{% top_bar %}``: base.html's top bar (portal.topbar)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from portal.topbar import render_top_bar
from portal.topbar import top_bar as _top_bar

register = template.Library()


@register.simple_tag(takes_context=True)
def top_bar(context: template.Context) -> SafeString:
    request = context.get("request")
    if request is None:
        return SafeString("")  # rendered outside a request (no page does): no bar, no token
    firm = context.get("current_firm")
    bar = _top_bar(
        request,
        firm_name=firm.name if firm is not None else None,
        member_role=context.get("member_role"),
        outbox=bool(context.get("outbox_enabled")),
    )
    return render_top_bar(bar, request)
