"""The bar at the top of every page, rendered once for what it shows.

Rendered by base.html's template on each request it cost 0.55-0.65 ms (about a tenth of a
light page): seven links reversed, the current section worked out, six languages listed.
What it shows depends on a few facts of the request, which `TopBar` holds, so it goes
through `portal.rows` like a list row: rendered once per process for each (bar, language,
time zone, URL prefix). The two parts that belong to one request are put in afterwards:
the CSRF token of its forms (the rows' own slot) and the path the language form returns to.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.http import HttpRequest
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from portal.rows import rendered_rows

# The page's path's stand-in while the bar is rendered for everyone (see portal.rows'
# CSRF slot: drawn afresh by each process, so no firm name can spell it).
NEXT_SLOT = secrets.token_hex(20)


@dataclass(frozen=True)
class TopBar:
    signed_in: bool
    # The firm's name when the main navigation shows (a member, or support inside a firm).
    firm_name: str | None
    # Which link is the current page's: "clients", "invoices", "unlinked" or "".
    section: str
    settings_link: bool
    outbox_link: bool
    next_path: str = NEXT_SLOT


def section_of(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return ""
    if (match.url_name or "").startswith("client"):
        return "clients"
    if match.namespace == "invoicing":
        return "invoices"
    if (match.url_name or "").startswith("unlinked"):
        return "unlinked"
    return ""


def top_bar(
    request: HttpRequest, *, firm_name: str | None, member_role: str | None, outbox: bool
) -> TopBar:
    user = getattr(request, "user", None)
    signed_in = bool(user is not None and user.is_authenticated)
    supporting = getattr(request, "support_grant", None) is not None
    return TopBar(
        signed_in=signed_in,
        firm_name=firm_name if signed_in else None,
        section=section_of(request),
        settings_link=not supporting,
        outbox_link=outbox and member_role == "owner" and not supporting,
    )


def render_top_bar(bar: TopBar, request: HttpRequest) -> SafeString:
    html = rendered_rows("portal/_topbar.html", [bar], request=request)[0]
    return mark_safe(html.replace(NEXT_SLOT, escape(request.get_full_path())))  # noqa: S308
