"""The Problems pages' cards and code headings as rows rendered once for what they show
(portal.rows).

A card's template took 0.4 ms a card on every view: a page of 25 cards, a third of its
time. `CardRow` holds everything a card shows, the parts of the page and the member that
change it included (the page's path for the forms' way back, the member's role, whether
they may fix the mailbox), and troubleshooting/_card.html reads nothing else. A code's
heading (its count, the clients it touches, its guide) is a `GroupRow`, around its cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from accounts.models import Role
from portal.rows import rendered_row_groups, rendered_rows
from troubleshooting.selectors import AffectedClient, Problem, ProblemGroup

# Actions whose fix ends in sending the invoice again (the card links the invoice once,
# beside the first of them).
_RESEND_ACTIONS = ("edit_address_resend", "resend", "send_test", "request_removal")

CARD_TEMPLATE = "troubleshooting/_card.html"
GROUP_HEAD_TEMPLATE = "troubleshooting/_group_head.html"
GROUP_FOOT_TEMPLATE = "troubleshooting/_group_foot.html"


@dataclass(frozen=True, slots=True)
class CardRow:
    """One problem card as a page shows it."""

    # The page around it.
    position: int  # 1, 2, ... on its page: the copy button finds its record by it
    show_client: bool
    guide_above: bool  # the page explains the code once, above its cards
    member_role: str
    next_path: str
    # The problem.
    code: str
    subject: str
    anchor: str
    severity: int
    title: str
    actions: tuple[str, ...]
    first_resend: str
    occurrences: int
    address: str
    no_recipient: bool
    edit_address_url: str
    technical: tuple[tuple[str, object, bool], ...]
    publish: tuple[str, str, str] | None
    gap_text: str
    folder_pk: int | None
    client_pk: int | None
    client_name: str
    delivery_pk: int | None
    delivery_normalized: str
    invoice_pk: int | None
    invoice_number: int | None
    connection_pk: int | None
    connection_address: str
    connection_kind: str
    connection_host: str
    connection_port: int | None
    connection_security: str
    connection_owner: str  # "" for the firm's shared mailbox
    connection_owner_id: int | None
    can_fix_connection: bool
    can_recheck_folder: bool
    handled: bool
    note_author: str
    note_created: datetime | None
    note_text: str

    @classmethod
    def of(
        cls,
        problem: Problem,
        *,
        position: int,
        request: HttpRequest,
        show_client: bool,
        guide_above: bool,
    ) -> CardRow:
        role = getattr(request, "member_role", None) or ""
        user_pk = request.user.pk
        detail = problem.detail
        connection, delivery, client, note = (
            problem.connection,
            problem.delivery,
            problem.client,
            problem.note,
        )
        folder = detail.get("folder")
        publish = detail.get("publish")
        owner_id = connection.owner_id if connection else None
        return cls(
            position=position,
            show_client=show_client,
            guide_above=guide_above,
            member_role=role,
            next_path=request.get_full_path(),
            code=problem.code,
            subject=problem.subject,
            anchor=problem.anchor,
            severity=problem.guide.severity,
            title=str(problem.guide.title),
            actions=tuple(problem.guide.actions),
            first_resend=next((a for a in problem.guide.actions if a in _RESEND_ACTIONS), ""),
            occurrences=problem.occurrences,
            address=problem.address,
            no_recipient=bool(detail.get("no_recipient")),
            edit_address_url=problem.edit_address_url,
            technical=tuple(problem.technical()),
            publish=(publish["name"], publish["type"], publish["value"]) if publish else None,
            gap_text=(
                render_to_string("mailsync/_gap.html", {"folder": folder})
                if problem.code == "sync.gap" and folder
                else ""
            ),
            folder_pk=folder.pk if folder else None,
            client_pk=client.pk if client else None,
            client_name=client.display_name if client else "",
            delivery_pk=delivery.pk if delivery else None,
            delivery_normalized=delivery.normalized if delivery else "",
            invoice_pk=delivery.invoice_id if delivery else None,
            invoice_number=delivery.invoice.number if delivery else None,
            connection_pk=connection.pk if connection else None,
            connection_address=connection.email_address if connection else "",
            connection_kind=connection.kind if connection else "",
            connection_host=connection.host if connection else "",
            connection_port=connection.port if connection else None,
            connection_security=connection.security if connection else "",
            connection_owner=str(connection.owner) if connection and connection.owner else "",
            connection_owner_id=owner_id,
            can_fix_connection=bool(connection)
            and (owner_id == user_pk or (owner_id is None and role == Role.OWNER)),
            can_recheck_folder=bool(connection)
            and (owner_id == user_pk or role in (Role.OWNER, Role.ADMIN)),
            handled=note is not None,
            note_author=str(note.author) if note else "",
            note_created=note.created if note else None,
            note_text=note.note if note else "",
        )


def card_rows(
    problems: list[Problem],
    *,
    request: HttpRequest,
    show_client: bool = False,
    guide_above: bool = False,
) -> list[CardRow]:
    """The cards of ``problems`` in order, as ``request``'s page shows them."""
    return [
        CardRow.of(
            problem,
            position=position,
            request=request,
            show_client=show_client,
            guide_above=guide_above,
        )
        for position, problem in enumerate(problems, start=1)
    ]


def problem_cards(problems: list[Problem], *, request: HttpRequest) -> list[SafeString]:
    """The HTML of ``card_rows`` (a client's Problems tab)."""
    return rendered_rows(CARD_TEMPLATE, card_rows(problems, request=request), request=request)


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A problem code on the Problems page, above and below its cards."""

    code: str
    title: str
    count: int
    clients: tuple[AffectedClient, ...]
    more_clients: int
    has_cards: bool  # the guide's text comes first; without cards, its one-line "what"
    what: str
    more: int  # problems beyond the cards shown: "Show all" links the code's pages
    on_code_page: bool

    @classmethod
    def of(cls, group: ProblemGroup, *, on_code_page: bool) -> GroupRow:
        return cls(
            code=group.guide.code,
            title=str(group.guide.title),
            count=group.count,
            clients=tuple(group.clients),
            more_clients=group.more_clients,
            has_cards=bool(group.problems),
            what=str(group.guide.what),
            more=group.more,
            on_code_page=on_code_page,
        )


def problem_groups(groups: list[ProblemGroup], *, request: HttpRequest, on_code_page: bool) -> None:
    """Set each group's ``head``, ``cards`` and ``foot`` HTML, as ``request``'s page shows
    them (the Problems page, or one code's pages)."""
    rows = [GroupRow.of(group, on_code_page=on_code_page) for group in groups]
    heads = rendered_rows(GROUP_HEAD_TEMPLATE, rows)
    feet = rendered_rows(GROUP_FOOT_TEMPLATE, rows)
    cards = rendered_row_groups(
        CARD_TEMPLATE,
        [
            card_rows(group.problems, request=request, show_client=True, guide_above=True)
            for group in groups
        ],
        request=request,
    )
    for group, head, foot, html in zip(groups, heads, feet, cards, strict=True):
        group.head, group.cards, group.foot = head, html, foot
