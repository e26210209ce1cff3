"""Open problems, read from where each app records them.

Delivery problems come from invoicing's `Delivery.problem_code` (the newest delivery of each
client address speaks for that address, so a later successful send clears the problem);
domain problems from the newest `DomainCheckRun`. Every function runs a fixed number of
queries, however many clients, deliveries or events there are.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import NamedTuple, TypeVar

from django.core.paginator import Page, Paginator
from django.db import connection as db
from django.db.models import (
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Value,
    Window,
)
from django.db.models.functions import Lower, RowNumber
from django.utils import formats, timezone
from django.utils.text import slugify
from django.utils.translation import get_language, gettext, gettext_noop

from accounts.models import User
from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.models import Invoice, InvoiceLine
from invoicing.selectors import OPEN_STATUSES
from mailsync.models import MailboxConnection
from mailsync.selectors import (
    failing_mailboxes_of_client,
    mailbox_trouble,
    unlinked_summary,
)
from portal import joined_rows
from portal.addresses import AddressError, check_characters, validate_address
from portal.cache_once import cached_once
from portal.dates import datetime_text
from portal.links import url_id
from portal.models import Client, ContactAddress, Firm
from troubleshooting.catalogue import Guide, Kind, guide_for
from troubleshooting.models import (
    AddressDomainCheck,
    DeliveryProblemsVersion,
    DomainCheckRun,
    ProblemNote,
)

# Events that explain a delivery problem; the newest gives its technical details. "unknown"
# is the sender's note that it lost track of an email (delivery.outcome_unknown).
FAILURE_KINDS = (
    "soft_bounced",
    "bounced",
    "rejected",
    "complained",
    "suppressed",
    "failed",
    "unknown",
)


# The codes of the problems found on addresses and clients rather than on deliveries.
INVALID_ADDRESS = "delivery.invalid_address"
NO_RECIPIENT = "delivery.not_sent_rejected_document"

# The rows of a card's technical details that come from the server's reply, when known
# (translated when shown: most cards have none of them).
_REPLY_ROWS = (
    ("reply_code", gettext_noop("SMTP reply code")),
    ("status", gettext_noop("Enhanced status")),
    ("step", gettext_noop("Failed step")),
)


@dataclass
class Problem:
    code: str
    guide: Guide
    subject: str  # stable key for notes: "delivery:<pk>", "domain:<check>"
    first_seen: datetime
    last_seen: datetime
    occurrences: int = 1
    client: Client | None = None
    address: str = ""
    delivery: Delivery | None = None
    detail: dict = field(default_factory=dict)
    note: ProblemNote | None = None
    edit_address_url: str = ""
    connection: MailboxConnection | None = None

    @property
    def kind(self) -> str:
        return self.guide.kind

    def __getstate__(self) -> dict:
        # Cached (`_cached_cards`) without its guide: the catalogue's, found again by code.
        state = self.__dict__.copy()
        del state["guide"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.guide = guide_for(self.code)

    @cached_property
    def anchor(self) -> str:
        """The subject as a part of HTML ids (the card's record and note fields)."""
        return slugify(self.subject)

    def technical(self) -> list[tuple[str, object, bool]]:
        """The card's "Technical details" as (label, value, preformatted) rows, only those
        known. Built here, not in the card's template: there, a dozen conditions and three
        dates were half of what a page of cards took to render."""
        detail = self.detail
        rows: list[tuple[str, object, bool]] = [
            (gettext("First seen"), datetime_text(self.first_seen, "SHORT_DATETIME_FORMAT"), False),
            (gettext("Last seen"), datetime_text(self.last_seen, "SHORT_DATETIME_FORMAT"), False),
            (gettext("Occurrences"), self.occurrences, False),
        ]
        for key, label in _REPLY_ROWS:
            if detail.get(key):
                rows.append((gettext(label), detail[key], False))
        if detail.get("next_attempt"):
            when = datetime_text(detail["next_attempt"], "SHORT_DATETIME_FORMAT")
            rows.append((gettext("Next attempt"), when, False))
        if detail.get("source"):
            rows.append((gettext("Reported by"), detail["source"], False))
        if detail.get("diagnostic"):
            rows.append((gettext("Server reply"), detail["diagnostic"], True))
        counts = detail.get("counts")
        if counts:
            text = gettext("%(messages)s messages in the folder") % {
                "messages": formats.localize(counts.get("server_messages"))
            }
            if counts.get("uidnext"):
                text += f", UIDNEXT {formats.localize(counts['uidnext'])}"
            rows.append((gettext("Server's own count (STATUS)"), text, False))
        if detail.get("summary"):
            label = (
                gettext("Folders not synced")
                if self.code == "sync.labels_excluded"
                else gettext("Check")
            )
            rows.append((label, detail["summary"], False))
        if detail.get("answers"):
            answers = "".join(f"{name} {rtype} {text}\n" for name, rtype, text in detail["answers"])
            rows.append((gettext("DNS answers"), answers, True))
        return rows


def _current_deliveries(qs: QuerySet[Delivery]) -> QuerySet[Delivery]:
    """Deliveries with a problem that no later delivery to the same client address replaced
    (`Delivery.superseded`), to an address the client still has (`Delivery.address_kept`:
    fixing a contact's address lifts the old address's problem for that client). Both are
    kept by the database: the current problems are one partial index,
    delivery_current_problem_idx, not every problem ever."""
    return qs.filter(is_test=False, superseded=False, address_kept=True).exclude(problem_code="")


# `_current_deliveries` as SQL over the alias ``t``, for our own queries.
CURRENT_DELIVERY_SQL = (
    "NOT t.is_test AND NOT t.superseded AND t.address_kept AND t.problem_code <> ''"
)


# What a delivery's card reads of it, its invoice and its client (`_delivery_problems`,
# troubleshooting.cards, the digest). Reading every column of the three (the invoice's notes,
# the client's search text...) cost 0.6-0.8 ms more for a page of 17 cards.
_CARD_FIELDS = (
    "firm_id",
    "invoice_id",
    "client_id",
    "address",
    "normalized",
    "problem_code",
    "created",
    "updated",
    "invoice__number",
    "client__firm_id",
    "client__display_name",
)


def _with_failures(deliveries: QuerySet[Delivery]) -> list[Delivery]:
    """The deliveries, each with its invoice's number, its client's name and ``failures``
    (oldest first)."""
    return list(
        deliveries.select_related("invoice", "client")
        .only(*_CARD_FIELDS)
        .prefetch_related(
            Prefetch(
                "events",
                queryset=DeliveryEvent.objects.filter(kind__in=FAILURE_KINDS).order_by(
                    "occurred_at"
                ),
                to_attr="failures",
            )
        )
    )


def _delivery_problems(
    deliveries: list[Delivery], firm: Firm, *, addresses: list[ContactAddress] | None = None
) -> list[Problem]:
    """The problem cards of ``deliveries`` (as `_with_failures` reads them). ``addresses``:
    every address of the deliveries' clients, when the caller has read them."""
    if addresses is None and deliveries:
        addresses = list(
            ContactAddress.objects.filter(
                firm=firm, normalized__in={d.normalized for d in deliveries}
            ).select_related("contact")
        )
    # Where each address lives now, for the "Edit address" action.
    address_urls = {
        (a.contact.client_id, a.normalized): url_id(
            "portal:address_edit", a.contact.client_id, a.pk
        )
        for a in addresses or ()
    }
    problems = []
    for delivery in deliveries:
        guide = guide_for(delivery.problem_code)
        if guide is None:
            continue
        failures = delivery.failures
        last = failures[-1] if failures else None
        problems.append(
            Problem(
                code=delivery.problem_code,
                guide=guide,
                subject=f"delivery:{delivery.pk}",
                first_seen=failures[0].occurred_at if failures else delivery.created,
                last_seen=last.occurred_at if last else delivery.updated,
                occurrences=max(len(failures), 1),
                client=delivery.client,
                address=delivery.address,
                delivery=delivery,
                detail={
                    "reply_code": last.reply_code if last else "",
                    "status": last.status_code if last else "",
                    "diagnostic": last.diagnostic if last else "",
                    "source": last.get_source_display() if last else "",
                },
                edit_address_url=address_urls.get((delivery.client_id, delivery.normalized), ""),
            )
        )
    return problems


_RUN_PARTS = (
    joined_rows.Part(
        DomainCheckRun, "r", ("firm_id", "domain", "results", "created", "expires_at")
    ),
)


def latest_domain_run(firm: Firm) -> DomainCheckRun | None:
    """The firm's newest domain check. Our own SQL (portal.joined_rows): the Problems pages
    and an invoice's page read it on every view, and the queryset cost more to build than
    the row to read."""
    found = joined_rows.select_from(
        _RUN_PARTS,
        f"FROM {DomainCheckRun._meta.db_table} r"
        " WHERE r.firm_id = %s ORDER BY r.created DESC, r.id DESC LIMIT 1",
        [firm.pk],
    )
    return found[0][0] if found else None


def _domain_run(firm: Firm, given: DomainCheckRun | object | None) -> DomainCheckRun | None:
    """``given``, the firm's latest domain check as a caller already read it (None: there is
    none), or read now when the caller passed ``...`` (it had not read it)."""
    return latest_domain_run(firm) if given is ... else given  # type: ignore[return-value]


def _domain_problems(run: DomainCheckRun | None) -> list[Problem]:
    if run is None:
        return []
    problems = []
    for result in run.failures:
        guide = guide_for(result["problem_code"])
        if guide is not None:
            problems.append(
                Problem(
                    code=guide.code,
                    guide=guide,
                    subject=f"domain:{run.domain}:{result['name']}",
                    first_seen=run.created,
                    last_seen=run.created,
                    detail={
                        "summary": result["summary"],
                        "answers": result["answers"],
                        "publish": result["publish"],
                        "domain": run.domain,
                    },
                )
            )
    return problems


def connection_blip(now: datetime | None = None) -> Q:
    """Mailboxes whose only trouble is a short-lived sync.connection failure (not shown):
    mailsync decides how long a server may be unreachable before it is a problem."""
    return MailboxConnection.blip(now or timezone.now())


def _mailbox_problems(connections, client: Client | None = None) -> list[Problem]:
    problems = []
    for connection in connections:
        guide = guide_for(connection.problem_code)
        if guide is None:
            continue
        seen = connection.problem_last_seen or connection.last_attempt_at or connection.created
        problems.append(
            Problem(
                code=connection.problem_code,
                guide=guide,
                subject=f"mailbox:{connection.pk}",
                first_seen=connection.problem_first_seen or seen,
                last_seen=seen,
                occurrences=max(connection.consecutive_failures, 1),
                client=client,
                address=connection.email_address,
                connection=connection,
                detail={
                    "diagnostic": connection.problem_detail,
                    "step": connection.problem_step,
                    "member": connection.owner,
                    "next_attempt": connection.next_attempt_at,
                },
            )
        )
    return problems


def _excluded_folder_problems(excluded: list) -> list[Problem]:
    """Folders with mail that are not synced, one problem per mailbox, naming the folders."""
    by_connection: dict[int, list] = defaultdict(list)
    for folder in excluded:
        by_connection[folder.connection_id].append(folder)
    problems = []
    for folders in by_connection.values():
        connection = folders[0].connection
        seen = connection.last_success_at or connection.created
        problems.append(
            Problem(
                code="sync.labels_excluded",
                guide=guide_for("sync.labels_excluded"),
                subject=f"folders:{connection.pk}",
                first_seen=seen,
                last_seen=seen,
                occurrences=sum(f.messages or 0 for f in folders),
                address=connection.email_address,
                connection=connection,
                detail={
                    "summary": ", ".join(f"{f.name} ({f.messages})" for f in folders),
                    "member": connection.owner,
                },
            )
        )
    return problems


def _renumbered_folder_problems(renumbered: list) -> list[Problem]:
    """Folders the server renumbers at every visit, one problem per mailbox, naming them."""
    by_connection: dict[int, list] = defaultdict(list)
    for folder in renumbered:
        by_connection[folder.connection_id].append(folder)
    problems = []
    for folders in by_connection.values():
        connection = folders[0].connection
        since = min(f.uidvalidity_unstable_since for f in folders)
        problems.append(
            Problem(
                code="sync.uidvalidity_unstable",
                guide=guide_for("sync.uidvalidity_unstable"),
                subject=f"renumbered:{connection.pk}",
                first_seen=since,
                last_seen=connection.last_success_at or since,
                occurrences=sum(f.reset_count for f in folders),
                address=connection.email_address,
                connection=connection,
                detail={
                    "summary": ", ".join(f.name for f in folders),
                    "member": connection.owner,
                },
            )
        )
    return problems


def _folder_gap_problems(gaps: list) -> list[Problem]:
    """Synced folders where the server holds mail the portal lacks (sync.gap), one problem
    per folder with both sides' counts, so it can be re-checked folder by folder."""
    problems = []
    for folder in gaps:
        connection = folder.connection
        counts = folder.gap_counts or {}
        problems.append(
            Problem(
                code="sync.gap",
                guide=guide_for("sync.gap"),
                subject=f"folder:{folder.pk}",
                first_seen=folder.gap_first_seen or folder.gap_checked_at or connection.created,
                last_seen=folder.gap_checked_at or connection.created,
                occurrences=folder.gap_missing,
                address=connection.email_address,
                connection=connection,
                detail={"member": connection.owner, "folder": folder, "counts": counts},
            )
        )
    return problems


def _unlinked_mail_problem(firm: Firm) -> list[Problem]:
    """Synced mail that reached no client: one informational problem counting the
    addresses in it that nobody has decided about (linked to a client or ignored); the
    firm's own addresses do not count."""
    summary = unlinked_summary(firm=firm)
    if summary is None:
        return []
    return [
        Problem(
            code="sync.not_linked",
            guide=guide_for("sync.not_linked"),
            subject="mailbox:unlinked",
            first_seen=summary.first_seen,
            last_seen=summary.last_seen,
            occurrences=summary.addresses,
        )
    ]


def _dead_domain_problems(firm: Firm, *, known: list[Problem] = ()) -> list[Problem]:
    """Contact addresses on domains that take no mail, found before anything bounced
    (addresses whose delivery already reported a problem are left to that problem)."""
    checks = _bad_domains(firm)
    if not checks:
        return []
    addresses = ContactAddress.objects.filter(_on_bad_domain(checks), firm=firm).select_related(
        "contact__client"
    )
    return _unreported_address_problems(list(addresses), checks, known)


def _client_dead_domain_problems(
    client: Client,
    addresses: list[ContactAddress],
    checks: dict[str, AddressDomainCheck],
    *,
    known: list[Problem] = (),
) -> list[Problem]:
    """`_dead_domain_problems` of one client, from its addresses as the caller read them."""
    on_bad_domain = [a for a in addresses if _is_on_bad_domain(a, checks)]
    for address in on_bad_domain:
        address.contact.client = client
    return _unreported_address_problems(on_bad_domain, checks, known)


def _unreported_address_problems(
    addresses: list[ContactAddress], checks: dict[str, AddressDomainCheck], known: list[Problem]
) -> list[Problem]:
    reported = {(p.client.pk, p.delivery.normalized) for p in known if p.delivery and p.client}
    unreported = [a for a in addresses if (a.contact.client_id, a.normalized) not in reported]
    return _address_problems(unreported, checks)


# Mail exchangers of Google Workspace and Gmail (aspmx.l.google.com, smtp.google.com,
# gmail-smtp-in.l.google.com, ...): the recipients who see Gmail's "dangerous" warning.
_GOOGLE_MX = re.compile(r"(^|[.\s])(google\.com|googlemail\.com)\.?$", re.IGNORECASE)
# Statuses of an email that reached (or is about to reach) the recipient's mailbox.
_REACHED = ("sent", "deferred", "delivered", "opened", "clicked")


def served_by_google(answers: list) -> bool:
    """Whether stored MX answers ``(name, "MX", "10 host.")`` name Google's mail servers."""
    return any(rtype == "MX" and _GOOGLE_MX.search(text.strip()) for _n, rtype, text in answers)


def firm_domain_misaligned(firm: Firm, domain_run: DomainCheckRun | object | None = ...) -> bool:
    """The firm's sending domain was checked and neither SPF nor DKIM aligns with it
    (``domain_run``: the firm's latest check, when the caller has read it)."""
    if not firm.sending_domain:
        return False
    run = _domain_run(firm, domain_run)
    return run is not None and run.domain == firm.sending_domain and not run.aligned


def flagged_dangerous_addresses(
    firm: Firm, deliveries: Iterable[Delivery], *, domain_run: DomainCheckRun | object | None = ...
) -> set[str]:
    """Of these deliveries' (normalized) addresses, those whose mail Gmail is likely to flag
    as dangerous: it left From the firm's own domain, that domain does not align (DMARC
    fails for it), and the address's domain is served by Google (MX, from the address
    domain checks). Mail that left From the platform's address passes the platform's DMARC,
    whatever the firm's domain says; a delivery claimed before the From domain was recorded
    is counted as the firm's."""
    if not firm_domain_misaligned(firm, domain_run):
        return set()
    own = firm.sending_domain.lower()
    addresses = {d.normalized for d in deliveries if d.from_domain in ("", own)}
    if not addresses:
        return set()
    domains = {address.rsplit("@", 1)[-1] for address in addresses}
    google = {
        check.domain
        for check in AddressDomainCheck.objects.filter(firm=firm, domain__in=domains, ok=True)
        if served_by_google(check.answers)
    }
    return {address for address in addresses if address.rsplit("@", 1)[-1] in google}


def _flagged_dangerous_problems(
    client: Client, *, known: list[Problem] = (), domain_run: DomainCheckRun | None
) -> list[Problem]:
    """The client's invoices that reached a Google-served mailbox while the firm's domain
    does not align: one problem per address, on its newest such email."""
    if not firm_domain_misaligned(client.firm, domain_run):
        return []
    reported = {p.delivery.normalized for p in known if p.delivery}
    newest: dict[str, Delivery] = {}
    for delivery in (
        Delivery.objects.filter(client=client, is_test=False, status__in=_REACHED)
        .select_related("invoice", "client")
        .order_by("-created", "-pk")
    ):
        newest.setdefault(delivery.normalized, delivery)
    flagged = flagged_dangerous_addresses(
        client.firm,
        [d for normalized, d in newest.items() if normalized not in reported],
        domain_run=domain_run,
    )
    guide = guide_for("delivery.flagged_dangerous")
    return [
        Problem(
            code=guide.code,
            guide=guide,
            subject=f"flagged:{delivery.pk}",
            first_seen=delivery.created,
            last_seen=delivery.updated,
            client=client,
            address=delivery.address,
            delivery=delivery,
            detail={"domain": client.firm.sending_domain},
        )
        for normalized, delivery in newest.items()
        if normalized in flagged
    ]


# Invoices still to be sent (drafts) or resent (open ones).
WAITING = (Invoice.Status.DRAFT, *OPEN_STATUSES)


def _no_recipient_clients(firm: Firm) -> QuerySet[Client]:
    """Clients with invoices to send (drafts with lines, open ones to resend) and no address
    that receives invoices: every send of them goes to nobody, so it is a problem on the
    client, not only the message shown at the moment someone pressed Send.

    Only the clients with no such address are read: `Client.invoice_addresses`, kept by
    the database, is 0 for them (index client_no_invoice_address_idx)."""
    waiting = Invoice.objects.filter(status__in=WAITING).order_by()
    return Client.objects.filter(firm=firm, invoice_addresses=0).filter(
        Exists(
            waiting.filter(client_id=OuterRef("pk")).filter(
                Exists(InvoiceLine.objects.filter(invoice_id=OuterRef("pk")))
            )
        ),
    )


def _no_recipient_problems(clients: Iterable[Client]) -> list[Problem]:
    """The cards of ``clients`` (of `_no_recipient_clients`). Their invoices are counted
    per client found (index on invoice.client_id), not joined and grouped: a join let the
    planner read every invoice of the firm once a few hundred clients showed; and only
    when a client was found (most firms have none)."""
    found = list(clients)
    if not found:
        return []
    counts = {
        row["client_id"]: row
        for row in Invoice.objects.filter(status__in=WAITING, client_id__in=[c.pk for c in found])
        .order_by()
        .values("client_id")
        .annotate(waiting=Count("pk"), since=Min("created"))
    }
    guide = guide_for(NO_RECIPIENT)
    now = timezone.now()
    return [
        Problem(
            code=guide.code,
            guide=guide,
            subject=f"client:{found_client.pk}:no_recipient",
            first_seen=counts[found_client.pk]["since"],
            last_seen=now,
            occurrences=counts[found_client.pk]["waiting"],
            client=found_client,
            detail={"no_recipient": True},
            edit_address_url=url_id("portal:client_detail", found_client.pk),
        )
        for found_client in found
        if found_client.pk in counts  # changed since it was found: no longer waiting
    ]


def _client_no_recipient_problems(client: Client) -> list[Problem]:
    if client.invoice_addresses:
        return []  # as read with the client: it has an address that receives invoices
    return _no_recipient_problems(_no_recipient_clients(client.firm).filter(pk=client.pk))


def _firm_settings_problems(firm: Firm) -> list[Problem]:
    """Sender details that no form would have accepted: they came in through an import."""
    if not firm.reply_to_email:
        return []
    try:
        # Unlike a form, nothing here trims: stray characters at the ends were saved as-is.
        check_characters(firm.reply_to_email)
        validate_address(firm.reply_to_email, check_deliverability=False)
    except AddressError as exc:
        now = timezone.now()
        return [
            Problem(
                code="domain.imported_settings_stale",
                guide=guide_for("domain.imported_settings_stale"),
                subject="firm:reply_to_email",
                first_seen=now,
                last_seen=now,
                address=firm.reply_to_email,
                detail={"diagnostic": exc.message},
            )
        ]
    return []


# What a card shows of a note: its text, who wrote it and when.
_NOTE_PARTS = (
    joined_rows.Part(ProblemNote, "n", ("subject", "code", "note", "author_id", "created")),
    joined_rows.Part(User, "u", ("first_name", "last_name", "email")),
)


def _attach_notes(firm: Firm, problems: list[Problem]) -> list[Problem]:
    """Each problem's newest note, if any (one query of our own SQL, portal.joined_rows:
    built as a queryset with its author, it cost the Problems pages 0.6 ms of Python)."""
    subjects = sorted({p.subject for p in problems})
    notes: dict[str, ProblemNote] = {}
    if subjects:
        placeholders = ", ".join(["%s"] * len(subjects))
        for note, author in joined_rows.select_from(
            _NOTE_PARTS,
            f"FROM {ProblemNote._meta.db_table} n"
            f" LEFT JOIN {User._meta.db_table} u ON u.id = n.author_id"
            f" WHERE n.firm_id = %s AND n.subject IN ({placeholders})"
            " ORDER BY n.created DESC, n.id DESC",
            [firm.pk, *subjects],
        ):
            note.author = author
            notes.setdefault(note.subject, note)  # the newest first
    for problem in problems:
        problem.note = notes.get(problem.subject)
    problems.sort(key=lambda p: (p.note is not None, -p.last_seen.timestamp()))
    return problems


def problems_for_client(
    client: Client, *, domain_run: DomainCheckRun | object | None = ...
) -> list[Problem]:
    """Every open problem touching ``client`` (``domain_run``: the firm's latest domain
    check, when the caller has read it already)."""
    run = _domain_run(client.firm, domain_run)

    def from_addresses() -> tuple[list[Problem], list[Problem]]:
        """The client's delivery problems, and its addresses on domains that take no mail
        that no delivery problem reports."""
        checks = _bad_domains(client.firm)
        deliveries = _with_failures(_current_deliveries(Delivery.objects.filter(client=client)))
        # The client's addresses, read once for the cards' "Edit address" links and for
        # the addresses on domains that take no mail (not at all when neither can show).
        addresses = (
            list(
                ContactAddress.objects.filter(
                    firm_id=client.firm_id, contact__client=client
                ).select_related("contact")
            )
            if deliveries or checks
            else []
        )
        sent = _delivery_problems(deliveries, client.firm, addresses=addresses)
        return sent, _client_dead_domain_problems(client, addresses, checks, known=sent)

    version = problems_version(client.firm)
    sent, dead = _cached_cards(client.firm, version, f"client:{client.pk}", from_addresses)
    # A failing mailbox touches every client whose mail came through it.
    touching = failing_mailboxes_of_client(client=client, with_problem=True)
    problems = sent + _mailbox_problems(touching, client) + dead
    problems += _flagged_dangerous_problems(client, known=problems, domain_run=run)
    problems += _client_no_recipient_problems(client)
    return _attach_notes(client.firm, problems)


def problems_for_firm(
    firm: Firm,
    *,
    kind: str | None = None,
    client_id: int | None = None,
    domain_run: DomainCheckRun | object | None = ...,
) -> list[Problem]:
    """Every open problem of the firm, built in full. For a firm's whole history this is
    what the dashboard must not do (it pages with `dashboard_groups` and `code_page`); kept
    for callers that want one firm-wide problem by code, and for small firms in tests."""
    problems: list[Problem] = []
    if kind in (None, Kind.DELIVERY):
        deliveries = _current_deliveries(Delivery.objects.filter(firm=firm))
        if client_id:
            deliveries = deliveries.filter(client_id=client_id)
        problems += _delivery_problems(_with_failures(deliveries), firm)
        problems += _dead_domain_problems(firm, known=problems)
        if not client_id:
            problems += _no_recipient_problems(_no_recipient_clients(firm).order_by("pk"))
    if kind in (None, Kind.SYNC) and not client_id:
        problems += _firm_sync_problems(firm)
    if kind in (None, Kind.DOMAIN) and not client_id:
        run = _domain_run(firm, domain_run)
        problems += _domain_problems(run) + _firm_settings_problems(firm)
    return _attach_notes(firm, problems)


def _firm_sync_problems(firm: Firm) -> list[Problem]:
    """Mailbox problems: bounded by the firm's mailboxes, not by its history."""
    trouble = mailbox_trouble(firm=firm)
    return (
        _mailbox_problems(trouble.failing)
        + _excluded_folder_problems(trouble.excluded)
        + _renumbered_folder_problems(trouble.renumbered)
        + _folder_gap_problems(trouble.gaps)
        + _unlinked_mail_problem(firm)
    )


# --- the firm's Problems dashboard: counts first, cards on demand -------------------------

# A delivery code with at most this many problems shows its cards on the dashboard; one
# with more shows its count and first clients, and its cards a page at a time (?code=).
# Small firms keep their one-click fixes in view; a large one does not pay for examples.
CARDS_INLINE = 3
CARDS_PER_PAGE = 25  # cards per page of one code (?code=)
CLIENTS_SHOWN = 10  # affected clients named under each code


class AffectedClient(NamedTuple):
    """A client named under a problem code on the dashboard: a link, not a model (a hundred
    Client instances per dashboard were a tenth of building it)."""

    pk: int
    display_name: str


@dataclass
class ProblemGroup:
    """One problem code: how many problems and clients it has, the first clients it
    affects, and the cards shown (a few on the dashboard, a page under ?code=)."""

    guide: Guide
    problems: list[Problem]
    count: int = 0
    client_count: int = 0
    clients: list[AffectedClient] = field(default_factory=list)
    # The HTML a page shows: above the cards, the cards, below them (troubleshooting.cards).
    head: str = ""
    cards: list[str] = field(default_factory=list)
    foot: str = ""

    @property
    def more(self) -> int:
        return self.count - len(self.problems)

    @property
    def more_clients(self) -> int:
        return self.client_count - len(self.clients)


def _bad_domains(firm: Firm) -> dict[str, AddressDomainCheck]:
    return {c.domain: c for c in AddressDomainCheck.objects.filter(firm=firm, ok=False)}


def _dead_domain_addresses(
    firm: Firm, checks: dict[str, AddressDomainCheck]
) -> QuerySet[ContactAddress]:
    """Contact addresses on domains that take no mail, unless a current delivery problem
    of the same client and address already speaks for them (SQL, for counting and paging).
    The suffix match uses the trigram index on ContactAddress.normalized."""
    reported = _current_deliveries(
        Delivery.objects.filter(
            firm_id=OuterRef("firm_id"),
            client_id=OuterRef("contact__client_id"),
            normalized=OuterRef("normalized"),
        )
    )
    return ContactAddress.objects.filter(_on_bad_domain(checks), firm=firm).filter(
        ~Exists(reported)
    )


def _on_bad_domain(checks: dict[str, AddressDomainCheck]) -> Q:
    """Contact addresses whose domain (after the last "@") is one of ``checks``'."""
    condition = Q()
    for domain in checks:
        condition |= Q(normalized__endswith=f"@{domain}")
    return condition


def _is_on_bad_domain(address: ContactAddress, checks: dict[str, AddressDomainCheck]) -> bool:
    """`_on_bad_domain` for an address already read."""
    return address.normalized.rsplit("@", 1)[-1] in checks


def _address_problems(
    addresses: list[ContactAddress], checks: dict[str, AddressDomainCheck]
) -> list[Problem]:
    problems = []
    for address in addresses:
        check = checks[address.normalized.rsplit("@", 1)[-1]]
        problems.append(
            Problem(
                code=INVALID_ADDRESS,
                guide=guide_for(INVALID_ADDRESS),
                subject=f"address:{address.pk}",
                first_seen=check.checked,
                last_seen=check.checked,
                client=address.contact.client,
                address=address.address,
                detail={"summary": check.summary, "answers": check.answers},
                edit_address_url=url_id(
                    "portal:address_edit", address.contact.client_id, address.pk
                ),
            )
        )
    return problems


class _Total(Func):
    """SUM over a window of an aggregate (Django's Sum refuses an aggregate inside)."""

    function = "SUM"
    window_compatible = True
    output_field = IntegerField()


# Where a delivery code's problems come from, in the order its pages show them: deliveries
# (newest first), addresses on domains that take no mail, clients nobody can send to.
DELIVERIES, ADDRESSES, CLIENTS = "deliveries", "addresses", "clients"


def _delivery_code_counts(firm: Firm, checks: dict[str, AddressDomainCheck]) -> list[tuple]:
    """The dashboard's delivery part, grouped and ranked in SQL: one row per (code, client)
    among the first CLIENTS_SHOWN clients of each code by name or the CARDS_INLINE clients
    with its newest problem, as (source, code, problems of the code from that source,
    clients of the code, client pk, client name, shown by name, newest delivery pk or
    None). Deliveries in one query; addresses on dead domains (under
    delivery.invalid_address) and clients nobody can send to (under
    delivery.not_sent_rejected_document) in one more each."""
    rows = (
        _current_deliveries(Delivery.objects.filter(firm=firm))
        .order_by()
        .values("problem_code", "client_id", "client__display_name")
        .annotate(n=Count("pk"), newest=Max("created"), newest_pk=Max("pk"))
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=F("problem_code"),
                order_by=[Lower("client__display_name"), "client_id"],
            ),
            recent=Window(
                RowNumber(),
                partition_by=F("problem_code"),
                order_by=[F("newest").desc(), F("newest_pk").desc()],
            ),
            problems=Window(_Total(F("n")), partition_by=F("problem_code")),
            clients=Window(_Total(Value(1)), partition_by=F("problem_code")),
        )
        .filter(Q(rank__lte=CLIENTS_SHOWN) | Q(recent__lte=CARDS_INLINE))
        .values_list(
            "problem_code",
            "problems",
            "clients",
            "client_id",
            "client__display_name",
            "rank",
            "recent",
            "newest_pk",
        )
    )
    result = [
        (DELIVERIES, code, problems, clients, pk, name, rank <= CLIENTS_SHOWN,
         newest_pk if recent <= CARDS_INLINE else None)
        for code, problems, clients, pk, name, rank, recent, newest_pk in rows
    ]  # fmt: skip
    if checks:
        dead = (
            _dead_domain_addresses(firm, checks)
            .order_by()
            .values("contact__client_id", "contact__client__display_name")
            .annotate(n=Count("pk"))
            .annotate(
                rank=Window(
                    RowNumber(),
                    order_by=[Lower("contact__client__display_name"), "contact__client_id"],
                ),
                problems=Window(_Total(F("n"))),
                clients=Window(_Total(Value(1))),
            )
            .filter(rank__lte=CLIENTS_SHOWN)
            .values_list(
                "problems", "clients", "contact__client_id", "contact__client__display_name"
            )
        )
        result += [(ADDRESSES, INVALID_ADDRESS, *row, True, None) for row in dead]
    unreachable = (
        _no_recipient_clients(firm)
        .annotate(
            rank=Window(RowNumber(), order_by=[Lower("display_name"), "pk"]),
            clients=Window(_Total(Value(1))),
        )
        .filter(rank__lte=CLIENTS_SHOWN)
        .values_list("clients", "pk", "display_name")
    )
    result += [
        (CLIENTS, NO_RECIPIENT, clients, clients, pk, name, True, None)
        for clients, pk, name in unreachable
    ]
    return result


def _source_problems(
    firm: Firm, code: str, source: str, start: int, end: int, version: ProblemsVersion
) -> list[Problem]:
    """Problems ``start`` to ``end`` of one code from one source, in the order its pages
    show them (deliveries and addresses from the cache while ``version`` stands)."""
    what = f"{code}:{source}:{start}:{end}"
    if source == DELIVERIES:

        def deliveries() -> list[Problem]:
            current = _current_deliveries(Delivery.objects.filter(firm=firm, problem_code=code))
            shown = current.order_by("-created", "-pk")[start:end]
            return _delivery_problems(_with_failures(shown), firm)

        return _cached_cards(firm, version, what, deliveries)
    if source == ADDRESSES:

        def addresses() -> list[Problem]:
            checks = _bad_domains(firm)
            found = (
                _dead_domain_addresses(firm, checks)
                .select_related("contact__client")
                .order_by("contact__client__display_name", "pk")
            )
            return _address_problems(list(found[start:end]), checks)

        return _cached_cards(firm, version, what, addresses)
    # Not cached: a client's card says it was last seen now (its invoices wait today).
    clients = _no_recipient_clients(firm).order_by(Lower("display_name"), "pk")
    return _no_recipient_problems(clients[start:end])


# Counts cached under a DeliveryProblemsVersion are current while it stands; this only
# bounds how long an unused entry stays in the cache.
COUNTS_SECONDS = 3600
# The form of the cached rows: a new one when `_delivery_code_counts` changes them.
COUNTS_FORM = 2


@functools.cache
def _version_triggers() -> str:
    """The version's deferred triggers, by name (they are named with their SQL)."""
    names: list[str] = []
    for module in (
        "0006_delivery_problems_version",
        "0007_problems_version_no_recipient",
        "0008_problems_version_cards",
    ):
        migration = importlib.import_module(f"troubleshooting.migrations.{module}")
        names += migration.CONSTRAINT_TRIGGERS
    return ", ".join(names)


class ProblemsVersion(NamedTuple):
    """A firm's `DeliveryProblemsVersion`, read once for a page: ``counts`` keys the
    delivery counts, ``counts`` and ``cards`` together key the cached cards."""

    counts: int
    cards: int


def problems_version(firm: Firm) -> ProblemsVersion:
    """The firm's version as it stands. Read before what is cached under it: anything
    counted or built after this read is at least as new as the version says."""
    if db.in_atomic_block and db.vendor == "postgresql":
        # Inside a transaction, its own changes raise the version only at its commit: ask
        # for them now, so that it reads counts and cards with its own changes in.
        with db.cursor() as cursor:
            cursor.execute(f"SET CONSTRAINTS {_version_triggers()} IMMEDIATE")
    # By hand: every Problems page reads it first, and the queryset's `first()` (an order
    # and a limit to build) cost four times the query's own Python.
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT version, cards FROM {DeliveryProblemsVersion._meta.db_table}"  # noqa: S608
            " WHERE firm_id = %s",
            [firm.pk],
        )
        row = cursor.fetchone()
    return ProblemsVersion(*row) if row else ProblemsVersion(0, 0)


def delivery_code_counts(firm: Firm, version: ProblemsVersion) -> list[tuple]:
    """``_delivery_code_counts``, from the cache while the firm's DeliveryProblemsVersion
    is ``version``, the one they were counted under (the caller's one primary-key read
    instead of three windowed queries)."""
    key = (
        f"troubleshooting:code-counts:{COUNTS_FORM}:{firm.pk}:{firm.created.timestamp()}"
        f":{version.counts}"
    )

    def count() -> list[tuple]:
        return _delivery_code_counts(firm, _bad_domains(firm))

    return cached_once(key, count, fresh_seconds=COUNTS_SECONDS)


# The form of the cached cards: a new one when `Problem` or what builds one changes.
CARDS_FORM = 1
# Cards are worth keeping only while their version stands; a busy firm raises it often,
# and each page seen under each version is an entry (about 15 KB for 25 cards).
CARDS_SECONDS = 600

T = TypeVar("T")


def _cached_cards(firm: Firm, version: ProblemsVersion, what: str, build: Callable[[], T]) -> T:
    """``build()``'s problems (``what`` names them), from the cache while the firm's
    ``version`` stands: building a page of delivery cards (the deliveries, their failure
    events, the clients' addresses, as model objects) was a third of its time. Kept per
    language: a card's links and the name of who reported a failure are in it. Notes are
    not cached (`_attach_notes` reads them after)."""
    key = (
        f"troubleshooting:cards:{CARDS_FORM}:{firm.pk}:{firm.created.timestamp()}"
        f":{version.counts}.{version.cards}:{get_language()}:{what}"
    )
    return cached_once(key, build, fresh_seconds=CARDS_SECONDS)


def dashboard_groups(
    firm: Firm,
    *,
    kind: str | None = None,
    member: int | None = None,
    domain_run: DomainCheckRun | None = None,
) -> list[ProblemGroup]:
    """The dashboard: every problem code with its count and first clients (counted in SQL),
    and the cards of the codes with at most CARDS_INLINE problems (firm-level kinds: all);
    a fixed number of queries, whatever the firm's history.
    ``member``: only the problems of that member's mailboxes."""
    groups: dict[str, ProblemGroup] = {}
    if kind in (None, Kind.DELIVERY) and member is None:
        version = problems_version(firm)
        # One row per (code, source, client shown); totals repeat on each row of a source.
        totals: dict[tuple[str, str], tuple[int, int]] = {}
        newest: list[tuple[str, int]] = []
        for (
            source,
            code,
            problems,
            clients,
            client_pk,
            name,
            named,
            newest_pk,
        ) in delivery_code_counts(firm, version):
            guide = guide_for(code)
            if guide is None:
                continue
            group = groups.setdefault(code, ProblemGroup(guide, []))
            totals[code, source] = (problems, clients)
            if named and all(c.pk != client_pk for c in group.clients):
                group.clients.append(AffectedClient(client_pk, name))
            if newest_pk is not None:
                newest.append((code, newest_pk))
        for (code, _source), (problems, clients) in totals.items():
            groups[code].count += problems
            groups[code].client_count += clients
        # The cards of the codes with few problems: deliveries read by primary key, the
        # other sources (each of one code) as a code's page reads them.
        inline = [pk for code, pk in newest if groups[code].count <= CARDS_INLINE]

        def inline_cards() -> list[Problem]:
            deliveries = _with_failures(Delivery.objects.filter(pk__in=inline))
            return _delivery_problems(deliveries, firm)

        what = "inline:" + ",".join(map(str, sorted(inline)))
        cards = _cached_cards(firm, version, what, inline_cards) if inline else []
        for code, source in totals:
            if source != DELIVERIES and groups[code].count <= CARDS_INLINE:
                cards += _source_problems(firm, code, source, 0, CARDS_INLINE, version)
        for problem in cards:
            groups[problem.code].problems.append(problem)
    small: list[Problem] = []  # kinds bounded by the firm's set-up: built in full
    if kind in (None, Kind.SYNC):
        problems = _firm_sync_problems(firm)
        if member is not None:
            problems = [p for p in problems if p.connection and p.connection.owner_id == member]
        small += problems
    if kind in (None, Kind.DOMAIN) and member is None:
        small += _domain_problems(domain_run) + _firm_settings_problems(firm)
    for problem in small:
        group = groups.setdefault(problem.code, ProblemGroup(problem.guide, []))
        group.problems.append(problem)
        group.count += 1
    _attach_notes(firm, [p for g in groups.values() for p in g.problems])
    for group in groups.values():
        group.problems.sort(key=lambda p: (p.note is not None, -p.last_seen.timestamp()))
        group.clients.sort(key=lambda c: (c.display_name.lower(), c.pk))
        del group.clients[CLIENTS_SHOWN:]
        group.client_count = max(group.client_count, len(group.clients))
    result = list(groups.values())
    result.sort(key=lambda g: (-g.guide.severity, -g.count))
    return result


def code_page(firm: Firm, code: str, page_number: str | int | None) -> tuple[ProblemGroup, Page]:
    """One delivery code's problems, a page of cards at a time (deliveries newest first,
    then the code's other sources); the firm-level kinds have few problems and show in
    full on the dashboard."""
    guide = guide_for(code)
    version = problems_version(firm)
    # Counted as the dashboard counts them (from its cache): a code's badge and its pages
    # agree, and the windowed count is not run again for each page.
    counts = {
        source: problems
        for source, c, problems, *_ in delivery_code_counts(firm, version)
        if c == code
    }
    total = sum(counts.values())
    page = Paginator(range(total), CARDS_PER_PAGE).get_page(page_number)
    start, end = page.start_index() - 1, page.end_index()
    problems: list[Problem] = []
    offset = 0
    for source in (DELIVERIES, ADDRESSES, CLIENTS):
        count = counts.get(source, 0)
        low, high = max(start - offset, 0), min(end - offset, count)
        if low < high:
            problems += _source_problems(firm, code, source, low, high, version)
        offset += count
    _attach_notes(firm, problems)
    return ProblemGroup(guide, problems, count=total), page


def problem_counts_for_clients(clients: list[Client]) -> None:
    """Set `problem_count` on one page of clients (the client list's badge): one query for
    the shown clients only, whatever the firm holds."""
    if not clients:
        return
    counted = joined_rows.counts_per_key(
        Delivery._meta.db_table,
        "t",
        "client_id",
        [client.pk for client in clients],
        CURRENT_DELIVERY_SQL,
    )
    for client in clients:
        client.problem_count = counted.get(client.pk, 0)
