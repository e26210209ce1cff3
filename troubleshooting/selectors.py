"""Open problems, read from where each app records them.

Delivery problems come from invoicing's `Delivery.problem_code` (the newest delivery of each
client address speaks for that address, so a later successful send clears the problem);
domain problems from the newest `DomainCheckRun`. Every function runs a fixed number of
queries, however many clients, deliveries or events there are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import (
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from invoicing.models import Delivery, DeliveryEvent
from mailsync.models import MailboxConnection, MessageSource
from mailsync.selectors import folders_excluded_with_mail, folders_with_gap, unlinked_summary
from portal.addresses import AddressError, check_characters, validate_address
from portal.models import Client, ContactAddress, Firm
from troubleshooting.catalogue import Guide, Kind, guide_for
from troubleshooting.models import AddressDomainCheck, DomainCheckRun, ProblemNote

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


def _current_deliveries(qs: QuerySet[Delivery]) -> QuerySet[Delivery]:
    """Deliveries with a problem that no later delivery to the same client address replaced."""
    newer = Delivery.objects.filter(
        client_id=OuterRef("client_id"),
        normalized=OuterRef("normalized"),
        is_test=False,
        created__gt=OuterRef("created"),
    )
    # Fixing a contact's address lifts the old address's problem for that client: only
    # addresses the client still has can speak for it.
    still_on_client = ContactAddress.objects.filter(
        contact__client_id=OuterRef("client_id"), normalized=OuterRef("normalized")
    )
    return (
        qs.filter(is_test=False)
        .exclude(problem_code="")
        .filter(~Exists(newer), Exists(still_on_client))
    )


def _delivery_problems(deliveries: QuerySet[Delivery], firm: Firm) -> list[Problem]:
    deliveries = deliveries.select_related("invoice", "client").prefetch_related(
        Prefetch(
            "events",
            queryset=DeliveryEvent.objects.filter(kind__in=FAILURE_KINDS).order_by("occurred_at"),
            to_attr="failures",
        )
    )
    deliveries = list(deliveries)
    # Where each address lives now, for the "Edit address" action (one query for all).
    address_urls = (
        {
            (a.contact.client_id, a.normalized): reverse(
                "portal:address_edit", args=[a.contact.client_id, a.pk]
            )
            for a in ContactAddress.objects.filter(
                firm=firm, normalized__in={d.normalized for d in deliveries}
            ).select_related("contact")
        }
        if deliveries
        else {}
    )
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


def latest_domain_run(firm: Firm) -> DomainCheckRun | None:
    return DomainCheckRun.objects.filter(firm=firm).order_by("-created").first()


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


def _failing_connections(firm: Firm) -> QuerySet[MailboxConnection]:
    return (
        MailboxConnection.objects.filter(firm=firm, intent=MailboxConnection.Intent.ACTIVE)
        .exclude(problem_code="")
        .select_related("owner")
    )


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


def _excluded_folder_problems(firm: Firm) -> list[Problem]:
    """Folders with mail that are not synced, one problem per mailbox, naming the folders."""
    by_connection: dict[int, list] = defaultdict(list)
    for folder in folders_excluded_with_mail(firm=firm):
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


def _folder_gap_problems(firm: Firm) -> list[Problem]:
    """Synced folders where the server holds mail the portal lacks (sync.gap), one problem
    per folder with both sides' counts, so it can be re-checked folder by folder."""
    problems = []
    for folder in folders_with_gap(firm=firm):
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


def _dead_domain_problems(
    firm: Firm, client: Client | None = None, *, known: list[Problem] = ()
) -> list[Problem]:
    """Contact addresses on domains that take no mail, found before anything bounced
    (addresses whose delivery already reported a problem are left to that problem)."""
    reported = {(p.client.pk, p.delivery.normalized) for p in known if p.delivery and p.client}
    checks = {c.domain: c for c in AddressDomainCheck.objects.filter(firm=firm, ok=False)}
    if not checks:
        return []
    on_bad_domain = Q()
    for domain in checks:
        on_bad_domain |= Q(normalized__endswith=f"@{domain}")
    addresses = ContactAddress.objects.filter(on_bad_domain, firm=firm).select_related(
        "contact__client"
    )
    if client is not None:
        addresses = addresses.filter(contact__client=client)
    problems = []
    for address in addresses:
        if (address.contact.client_id, address.normalized) in reported:
            continue
        check = checks[address.normalized.rsplit("@", 1)[-1]]
        problems.append(
            Problem(
                code="delivery.invalid_address",
                guide=guide_for("delivery.invalid_address"),
                subject=f"address:{address.pk}",
                first_seen=check.checked,
                last_seen=check.checked,
                client=address.contact.client,
                address=address.address,
                detail={"summary": check.summary, "answers": check.answers},
                edit_address_url=reverse(
                    "portal:address_edit", args=[address.contact.client_id, address.pk]
                ),
            )
        )
    return problems


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


def _attach_notes(firm: Firm, problems: list[Problem]) -> list[Problem]:
    subjects = {p.subject for p in problems}
    notes = {}
    for note in ProblemNote.objects.filter(firm=firm, subject__in=subjects).select_related(
        "author"
    ):
        notes.setdefault(note.subject, note)  # newest first by Meta.ordering
    for problem in problems:
        problem.note = notes.get(problem.subject)
    problems.sort(key=lambda p: (p.note is not None, -p.last_seen.timestamp()))
    return problems


def problems_for_client(client: Client) -> list[Problem]:
    deliveries = _current_deliveries(Delivery.objects.filter(client=client))
    problems = _delivery_problems(deliveries, client.firm)
    # A failing mailbox touches every client whose mail came through it.
    touching = _failing_connections(client.firm).filter(
        Exists(
            MessageSource.objects.filter(
                connection=OuterRef("pk"), message__client_links__client=client
            )
        )
    )
    problems += _mailbox_problems(touching, client)
    problems += _dead_domain_problems(client.firm, client, known=problems)
    return _attach_notes(client.firm, problems)


def problems_for_firm(
    firm: Firm,
    *,
    kind: str | None = None,
    client_id: int | None = None,
    domain_run: DomainCheckRun | object | None = ...,
) -> list[Problem]:
    """`domain_run`: the firm's latest run when the caller has it already (None: no run)."""
    problems: list[Problem] = []
    if kind in (None, Kind.DELIVERY):
        deliveries = _current_deliveries(Delivery.objects.filter(firm=firm))
        if client_id:
            deliveries = deliveries.filter(client_id=client_id)
        problems += _delivery_problems(deliveries, firm)
        problems += _dead_domain_problems(firm, known=problems)
    if kind in (None, Kind.SYNC) and not client_id:
        problems += _mailbox_problems(_failing_connections(firm))
        problems += _excluded_folder_problems(firm)
        problems += _folder_gap_problems(firm)
        problems += _unlinked_mail_problem(firm)
    if kind in (None, Kind.DOMAIN) and not client_id:
        run = latest_domain_run(firm) if domain_run is ... else domain_run
        problems += _domain_problems(run)
        problems += _firm_settings_problems(firm)
    return _attach_notes(firm, problems)


@dataclass
class ProblemGroup:
    guide: Guide
    problems: list[Problem]

    @property
    def clients(self) -> list[Client]:
        seen: dict[int, Client] = {}
        for problem in self.problems:
            if problem.client is not None:
                seen.setdefault(problem.client.pk, problem.client)
        return sorted(seen.values(), key=lambda c: c.display_name)


def group_by_code(problems: list[Problem]) -> list[ProblemGroup]:
    grouped: dict[str, list[Problem]] = defaultdict(list)
    for problem in problems:
        grouped[problem.code].append(problem)
    groups = [ProblemGroup(guide_for(code), items) for code, items in grouped.items()]
    groups.sort(key=lambda g: (-g.guide.severity, -len(g.problems)))
    return groups


def annotate_problem_count(clients: QuerySet[Client]) -> QuerySet[Client]:
    """Add `problem_count` to a client queryset (one subquery, whatever the page size)."""
    current = _current_deliveries(Delivery.objects.filter(client_id=OuterRef("pk")))
    counted = current.order_by().values("client_id").annotate(n=Count("pk")).values("n")
    return clients.annotate(
        problem_count=Coalesce(Subquery(counted, output_field=IntegerField()), 0)
    )
