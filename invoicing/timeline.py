"""An invoice's delivery timeline as its page shows it: one row per recipient, each holding
every word, date and action its HTML needs, so that the HTML is rendered once per content
(portal.rows) and not again on every view.

The timeline's template work (dates in two formats, labels of every event and source, a
form per send) was a third of the invoice page, for two recipients and five events.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Protocol

from django.http import HttpRequest
from django.utils.functional import Promise
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy

from accounts.models import Role
from invoicing.delivery.models import Delivery
from invoicing.models import Invoice
from invoicing.payments.link_requests import LINK_REQUESTED
from invoicing.selectors import RecipientTimeline
from portal.rows import rendered_rows

# What each delivery state and event is called on the timeline. "Opened" comes from a
# tracking image: mail apps that block images never report it, and scanners that fetch them
# report opens nobody made.
KIND_LABELS: dict[str, str | Promise] = {
    **dict(Delivery.Status.choices),
    Delivery.Status.OPENED: gettext_lazy("Opened (approximate)"),
    LINK_REQUESTED: gettext_lazy("The client asked for a new link"),
}

# Who may revoke a Pay Now link, and who may lift a suppression (the suppression list is
# the owner's page).
REVOKE_ROLES = (Role.OWNER, Role.ADMIN)
UNBLOCK_ROLES = (Role.OWNER,)

TIMELINE_TEMPLATE = "invoicing/_recipient.html"


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event of a send: when, who reported it, what happened, the server's words."""

    occurred_at: datetime.datetime
    source: str
    label: str
    approximate: bool  # an open, reported by a tracking image
    reply_code: str
    status_code: str
    diagnostic: str


@dataclass(frozen=True, slots=True)
class SendRow:
    """One send (a `Delivery`) to the recipient, with its events newest first."""

    pk: int
    created: datetime.datetime
    events: tuple[EventRow, ...]
    link_viewed_at: datetime.datetime | None
    link_revoked_at: datetime.datetime | None
    can_revoke: bool  # a live Pay Now link of a real send, and a member who may revoke it


class Flag(Protocol):
    """A catalogue guide, as the invoice page is given one for a flagged recipient."""

    code: str
    title: str | Promise
    what: str | Promise


@dataclass(frozen=True, slots=True)
class RecipientRow:
    """One recipient of the invoice: everything its part of the timeline shows
    (invoicing/_recipient.html reads this and nothing else)."""

    invoice_pk: int
    client_pk: int
    address: str
    normalized: str
    is_test: bool
    latest_pk: int
    status: str
    status_label: str
    problem_code: str
    can_unblock: bool  # suppressed, and the member may lift it
    can_resend: bool
    contact_address_pk: int | None  # where the address lives now (None: no longer on file)
    link_requested_at: datetime.datetime | None  # a new link asked for and not yet sent
    sends: tuple[SendRow, ...]
    # A guide's (code, title, what) when Gmail is likely to warn about this recipient's
    # mail; set by `timeline_html` from what the troubleshooting app says.
    flagged: tuple[str, str, str] | None = None


def recipient_rows(
    invoice: Invoice, timelines: list[RecipientTimeline], *, role: str
) -> list[RecipientRow]:
    """The page's rows for ``timelines`` (`invoice_timelines`), for a member of ``role``."""
    open_invoice = invoice.status not in (Invoice.Status.VOID, Invoice.Status.PAID)
    rows = []
    for timeline in timelines:
        latest = timeline.latest
        # The client's latest request for a new link (made from any earlier email's link),
        # while no email sent after it answered it.
        requests = [
            event.occurred_at
            for delivery in timeline.deliveries
            for event in timeline.events[delivery.pk]
            if event.kind == LINK_REQUESTED and event.occurred_at > latest.created
        ]
        rows.append(
            RecipientRow(
                invoice_pk=invoice.pk,
                client_pk=invoice.client_id,
                address=timeline.address,
                normalized=timeline.normalized,
                is_test=latest.is_test,
                latest_pk=latest.pk,
                status=latest.status,
                status_label=str(KIND_LABELS.get(latest.status, latest.status)),
                problem_code=latest.problem_code,
                can_unblock=latest.status == Delivery.Status.SUPPRESSED and role in UNBLOCK_ROLES,
                can_resend=open_invoice and not latest.is_test,
                contact_address_pk=timeline.contact_address_pk,
                link_requested_at=max(requests, default=None),
                sends=tuple(_send_row(d, timeline, role=role) for d in timeline.deliveries),
            )
        )
    return rows


def _send_row(delivery: Delivery, timeline: RecipientTimeline, *, role: str) -> SendRow:
    link = timeline.links.get(delivery.pk)  # absent: a send without a Pay Now link
    return SendRow(
        pk=delivery.pk,
        created=delivery.created,
        events=tuple(
            EventRow(
                occurred_at=event.occurred_at,
                source=str(event.get_source_display()),
                label=str(KIND_LABELS.get(event.kind, event.kind)),
                approximate=event.kind == Delivery.Status.OPENED,
                reply_code=event.reply_code,
                status_code=event.status_code,
                diagnostic=event.diagnostic,
            )
            for event in timeline.events[delivery.pk]
        ),
        link_viewed_at=link.last_viewed_at if link else None,
        link_revoked_at=link.revoked_at if link else None,
        can_revoke=link is not None
        and link.revoked_at is None
        and not delivery.is_test
        and role in REVOKE_ROLES,
    )


def timeline_html(
    rows: list[RecipientRow], flagged: dict[str, Flag], *, request: HttpRequest
) -> SafeString:
    """The rows' HTML, each recipient Gmail is likely to warn about (``flagged``, by
    normalized address) with its guide's words; the forms carry ``request``'s CSRF token."""
    rows = [
        replace(row, flagged=_flag_words(flagged[row.normalized]))
        if row.normalized in flagged
        else row
        for row in rows
    ]
    html = rendered_rows(TIMELINE_TEMPLATE, rows, request=request)
    return mark_safe("".join(html))  # noqa: S308 (rendered by the template, escaped there)


def _flag_words(guide: Flag) -> tuple[str, str, str]:
    return (guide.code, str(guide.title), str(guide.what))
