# ruff: noqa: S608 (SQL built from the models' table names only; no value is interpolated)
"""Fill PostgreSQL with a firm the size of two busy years, to measure pages at that scale.

One firm ("scale-main") with 10,000 clients, 25,000 contacts, 1,000,000 synced messages
linked to clients (threads of one to a dozen messages, a few busy clients with most of the
mail), 30 members with a mailbox each, 200,000 invoice deliveries with 600,000 events,
problems of every recorded kind on about 2% of the clients, and 50 small firms beside it.
Rows go in through COPY with explicit ids (one statement per table), so a million messages
take minutes. Every figure can be scaled down (``--clients 1000 --messages 50000``).

Re-runnable: the firms it made before (slug ``scale-*``) and their users are deleted first.
Raw MIME is kept small (headers and text, about 1-2 KB a message, while ``size`` records a
realistic size): a million 40 KB messages would put 40 GB in the database, which is what the
blob store holds it (written here in parallel batches); the pages never read ``raw``.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import itertools
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import Membership, User
from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression
from invoicing.models import Invoice, InvoiceLine
from mailsync.models import (
    IgnoredAddress,
    LinkedAddress,
    MailboxConnection,
    MailboxFolder,
    Message,
    MessageClientLink,
    MessageSource,
)
from portal.blobs import blobs_put_many
from portal.models import Client, Contact, ContactAddress, Firm
from troubleshooting.models import AddressDomainCheck, DomainCheckRun, ProblemNote

SLUG_PREFIX = "scale-"
PASSWORD = "scale-portal-2026"  # noqa: S105 (a throwaway benchmark database's login)
DAYS = 730

FIRST = [
    "Alder",
    "Birch",
    "Cedar",
    "Elm",
    "Hazel",
    "Juniper",
    "Larch",
    "Maple",
    "Oak",
    "Pine",
    "Rowan",
    "Spruce",
    "Willow",
    "Aspen",
    "Beech",
    "Holly",
    "Laurel",
    "Myrtle",
    "Poplar",
    "Sorrel",
    "Amber",
    "Coral",
    "Indigo",
    "Ivory",
    "Scarlet",
    "Silver",
    "Golden",
    "North",
    "South",
    "East",
    "West",
    "Harbour",
    "River",
    "Valley",
    "Meadow",
    "Summit",
    "Bridge",
    "Castle",
    "Forge",
    "Mill",
    "Orchard",
    "Lakeside",
    "Hillcrest",
    "Brookside",
    "Fairview",
    "Greenway",
    "Highland",
    "Kingsley",
    "Lindqvist",
    "Nordberg",
    "Halvorsen",
    "Virtanen",
    "Korhonen",
    "Popescu",
    "Ionescu",
    "Kowalski",
    "Nowak",
    "Garcia",
    "Martinez",
    "Fernandez",
    "Johansen",
    "Larsen",
    "Nilsen",
    "Lehtonen",
    "Makinen",
    "Dumitru",
    "Wisniewski",
    "Lopez",
    "Sanchez",
    "Moreau",
]
SECOND = [
    "Dental",
    "Farm",
    "Bakery",
    "Consulting",
    "Logistics",
    "Motors",
    "Studio",
    "Design",
    "Builders",
    "Plumbing",
    "Electric",
    "Pharmacy",
    "Clinic",
    "Legal",
    "Architects",
    "Florist",
    "Catering",
    "Transport",
    "Software",
    "Media",
    "Printing",
    "Joinery",
    "Roofing",
    "Optics",
    "Veterinary",
    "Fitness",
    "Travel",
    "Imports",
    "Textiles",
    "Foods",
    "Brewery",
    "Gallery",
    "Partners",
    "Holdings",
    "Trading",
    "Services",
    "Solutions",
    "Group",
    "Associates",
    "Workshop",
]
SUFFIX = ("Ltd", "Oy", "AS", "SRL", "S.L.", "Sp. z o.o.", "& Co", "", "", "")
GIVEN = [
    "Anna",
    "Ola",
    "Kari",
    "Mikko",
    "Aino",
    "Ioana",
    "Andrei",
    "Maria",
    "Jan",
    "Piotr",
    "Lucia",
    "Carlos",
    "Sofia",
    "Erik",
    "Ingrid",
    "Lars",
    "Sanna",
    "Elena",
    "Tomasz",
    "Marta",
    "Pablo",
    "Laura",
    "Nina",
    "Jonas",
    "Eva",
    "Paul",
    "Ida",
    "Leo",
    "Mia",
    "Noah",
]
SUBJECTS = (
    "VAT return {q}",
    "Payroll for {m}",
    "Annual accounts {y}",
    "Receipts for {m}",
    "Question about invoice {n}",
    "Bank statements {m}",
    "Tax assessment {y}",
    "Meeting next week",
    "Documents you asked for",
    "Expense report {m}",
    "Year-end closing {y}",
    "New employee contract",
)
WORDS = [
    "please",
    "find",
    "attached",
    "the",
    "documents",
    "for",
    "the",
    "period",
    "we",
    "discussed",
    "regarding",
    "the",
    "invoices",
    "and",
    "receipts",
    "from",
    "last",
    "month",
    "let",
    "me",
    "know",
    "if",
    "anything",
    "is",
    "missing",
    "the",
    "bank",
    "statement",
    "shows",
    "two",
    "payments",
    "that",
    "I",
    "cannot",
    "match",
    "thank",
    "you",
    "for",
    "your",
    "help",
    "with",
    "the",
    "return",
    "we",
    "will",
    "need",
    "the",
    "signed",
    "forms",
    "before",
    "the",
    "deadline",
    "best",
    "regards",
    "kind",
    "regards",
]
NEWSLETTERS = ("news", "offers", "updates", "noreply", "billing", "support", "info", "events")

# Problems seeded on ~2% of the clients: the newest delivery to one of their addresses.
# (problem_code, delivery status, event kind, reply, enhanced status, reason, diagnostic)
DELIVERY_PROBLEMS = (
    ("delivery.hard_bounce", "bounced", "bounced", "550", "5.1.1", "mailbox_unknown",
     "550 5.1.1 <{a}>: Recipient address rejected: User unknown"),
    ("delivery.soft_bounce", "soft_bounced", "soft_bounced", "452", "4.2.2", "mailbox_full",
     "452 4.2.2 Mailbox full"),
    ("delivery.rejected_policy", "rejected", "rejected", "550", "5.7.1", "policy",
     "550 5.7.1 Message rejected due to local policy"),
    ("delivery.complaint", "complained", "complained", "", "", "complaint",
     "The recipient marked the message as spam"),
    ("delivery.suppressed", "suppressed", "suppressed", "", "", "suppressed",
     "Not sent: the address is blocked"),
    ("delivery.outcome_unknown", "unknown", "unknown", "", "", "",
     "The connection dropped after DATA"),
    ("delivery.blocked_repeated_failures", "soft_bounced", "soft_bounced", "421", "4.7.0",
     "throttled", "421 4.7.0 Try again later"),
    ("delivery.not_sent_rejected_document", "failed", "failed", "", "", "",
     "The attachment was refused"),
    ("send.invalid_recipient_chars", "failed", "failed", "", "", "",
     "The address contains a character email addresses cannot hold"),
)  # fmt: skip
DEAD_DOMAIN = "gone-mail.test"


class Ids:
    """Explicit primary keys for COPY: each table continues after its current maximum."""

    def __init__(self) -> None:
        self._next: dict[type[models.Model], Iterator[int]] = {}

    def __call__(self, model: type[models.Model]) -> int:
        if model not in self._next:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {model._meta.db_table}")
                self._next[model] = itertools.count(cursor.fetchone()[0] + 1)
        return next(self._next[model])

    def prime(self, *tables: type[models.Model]) -> None:
        """Read every table's maximum now: not while a COPY holds the connection."""
        for model in tables:
            self(model)
            self._next[model] = itertools.chain([next(self._next[model]) - 1], self._next[model])

    def sync_sequences(self) -> None:
        with connection.cursor() as cursor:
            for model in self._next:
                table = model._meta.db_table
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                )


def copy_rows(model: type[models.Model], columns: Sequence[str], rows: Iterable[tuple]) -> int:
    """COPY `rows` (tuples in `columns` order) into `model`'s table; other columns get their
    field's default (so a column added later does not break the command). Returns the count."""
    fields = {f.column: f for f in model._meta.concrete_fields}
    extra = [c for c in fields if c not in columns]
    defaults = []
    for column in extra:
        field = fields[column]
        value = field.get_default()
        if isinstance(field, models.JSONField):
            value = json.dumps(value)
        defaults.append(value)
    tail = tuple(defaults)
    names = ", ".join(f'"{c}"' for c in (*columns, *extra))
    count = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy(f"COPY {model._meta.db_table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row + tail)
                count += 1
    return count


def _weights(n: int, skew: float, rng: random.Random) -> list[float]:
    """Cumulative weights: a few clients busy, most quiet (Zipf-like), in random order."""
    raw = [1 / (i + 5) ** skew for i in range(n)]
    rng.shuffle(raw)
    return list(itertools.accumulate(raw))


def _pick(cumulative: list[float], rng: random.Random) -> int:
    return bisect.bisect(cumulative, rng.random() * cumulative[-1])


class Seeder:
    def __init__(self, rng: random.Random, ids: Ids, out) -> None:  # type: ignore[no-untyped-def]
        self.rng = rng
        self.ids = ids
        self.out = out
        self.now = timezone.now()
        self.start = self.now - datetime.timedelta(days=DAYS)
        self.password = make_password(PASSWORD)

    def log(self, text: str) -> None:
        self.out.write(text)

    def when(self, share: float) -> datetime.datetime:
        """The moment `share` (0..1) of the way through the two years."""
        return self.start + datetime.timedelta(seconds=share * DAYS * 86400)

    # --- firm, members, mailboxes ----------------------------------------------------------

    def firm(self, slug: str, name: str, domain: str, members: int) -> tuple[Firm, list[User]]:
        firm = Firm.objects.create(
            name=name,
            slug=slug,
            sending_domain=domain,
            sender_name=name,
            reply_to_email=f"office@{domain}",
        )
        users = User.objects.bulk_create(
            User(
                email=("owner" if n == 0 else f"member{n:02d}") + f"@{domain}",
                first_name=self.rng.choice(GIVEN),
                last_name=self.rng.choice(FIRST),
                password=self.password,
            )
            for n in range(members)
        )
        Membership.objects.bulk_create(
            Membership(
                user=user,
                firm=firm,
                role="owner" if n == 0 else ("admin" if n < 4 else "staff"),
            )
            for n, user in enumerate(users)
        )
        self._verified_emails(users)
        return firm, users

    def _verified_emails(self, users: list[User]) -> None:
        # allauth's login asks for a verified address; a seeded member can sign in at once.
        from allauth.account.models import EmailAddress

        EmailAddress.objects.bulk_create(
            EmailAddress(user=u, email=u.email, verified=True, primary=True) for u in users
        )

    def mailboxes(
        self, firm: Firm, users: list[User], domain: str, failing: int, excluded: int
    ) -> list[tuple[MailboxConnection, MailboxFolder]]:
        failures = [
            ("sync.auth_failed", "needs_reauth", "login", "NO [AUTHENTICATIONFAILED] Invalid"),
            ("sync.connection", "degraded", "connect", "Connection timed out"),
            ("sync.two_factor", "needs_reauth", "login", "NO Application-specific password"),
            ("sync.server_settings", "needs_settings", "connect", "Name or service not known"),
        ]
        result = []
        for n, user in enumerate(users):
            problem = failures[n % len(failures)] if n < failing else None
            connection_ = MailboxConnection.objects.create(
                firm=firm,
                owner=user,
                kind="imap",
                email_address=user.email,
                host=f"imap.{domain}",
                port=993,
                security="ssl",
                username=user.email,
                health=problem[1] if problem else "ok",
                problem_code=problem[0] if problem else "",
                problem_step=problem[2] if problem else "",
                problem_detail=problem[3] if problem else "",
                problem_first_seen=self.now - datetime.timedelta(days=2) if problem else None,
                problem_last_seen=self.now if problem else None,
                consecutive_failures=5 if problem else 0,
                last_attempt_at=self.now,
                last_success_at=self.now - datetime.timedelta(days=2 if problem else 0),
            )
            inbox = MailboxFolder.objects.create(
                connection=connection_, name="INBOX", enabled=True, state="idle"
            )
            MailboxFolder.objects.create(
                connection=connection_,
                name="Archive/Clients",
                enabled=False,
                messages=self.rng.randint(50, 900) if n < excluded else 0,
            )
            result.append((connection_, inbox))
        return result

    # --- clients ---------------------------------------------------------------------------

    def clients(self, firm: Firm, count: int, contacts: int, tag: str) -> list[dict]:
        """Clients with their contacts' addresses (COPY). Returns one dict per client."""
        rng = self.rng
        clients = []
        for n in range(count):
            company = rng.random() < 0.8
            if company:
                name = f"{rng.choice(FIRST)} {rng.choice(SECOND)} {rng.choice(SUFFIX)}".strip()
            else:
                name = f"{rng.choice(GIVEN)} {rng.choice(FIRST)}"
            slug = "-".join(name.lower().replace("&", "and").replace(".", "").split())
            clients.append(
                {
                    "id": self.ids(Client),
                    "name": name,
                    "kind": "company" if company else "individual",
                    "status": "archived" if rng.random() < 0.08 else "active",
                    "domain": f"{slug}-{tag}{n}.test",
                    "created": self.when(rng.random() * 0.5),
                    "addresses": [],
                }
            )
        copy_rows(
            Client,
            ("id", "firm_id", "display_name", "kind", "status", "language", "created", "updated"),
            (
                (c["id"], firm.pk, c["name"], c["kind"], c["status"], "", c["created"], self.now)
                for c in clients
            ),
        )
        # Every client has a contact; the rest go to clients at random (busy ones get more).
        owners = list(range(count)) + [rng.randrange(count) for _ in range(contacts - count)]
        contact_rows, address_rows = [], []
        for index in owners:
            client = clients[index]
            contact_id = self.ids(Contact)
            given = rng.choice(GIVEN)
            contact_rows.append(
                (contact_id, client["id"], f"{given} {rng.choice(FIRST)}", client["created"])
            )
            address = f"{given.lower()}.{len(client['addresses'])}@{client['domain']}"
            if rng.random() < 0.004:  # a few contacts on a domain that takes no mail
                address = f"{given.lower()}.{client['id']}@{DEAD_DOMAIN}"
            address_rows.append(
                (
                    self.ids(ContactAddress),
                    firm.pk,
                    contact_id,
                    address,
                    address,
                    not client["addresses"],
                    True,
                    client["created"],
                )
            )
            client["addresses"].append(address)
        copy_rows(Contact, ("id", "client_id", "name", "created"), contact_rows)
        copy_rows(
            ContactAddress,
            (
                "id",
                "firm_id",
                "contact_id",
                "address",
                "normalized",
                "is_primary",
                "receives_invoices",
                "created",
            ),
            address_rows,
        )
        copy_rows(
            LinkedAddress,
            ("id", "firm_id", "normalized", "client_id"),
            (
                (self.ids(LinkedAddress), firm.pk, a, c["id"])
                for c in clients
                for a in dict.fromkeys(c["addresses"])
            ),
        )
        return clients

    # --- synced mail -----------------------------------------------------------------------

    def messages(
        self,
        firm: Firm,
        clients: list[dict],
        boxes: list[tuple[MailboxConnection, MailboxFolder]],
        count: int,
    ) -> None:
        rng = self.rng
        weights = _weights(len(clients), 1.1, rng)
        uids = {connection_.pk: itertools.count(1) for connection_, _ in boxes}
        threads: dict[int, tuple[str, str, int]] = {}  # client index -> open thread
        members = [c.email_address for c, _ in boxes]
        outsiders = [
            f"{rng.choice(NEWSLETTERS)}@{rng.choice(FIRST).lower()}-{n}.example"
            for n in range(max(count // 300, 10))
        ]
        links: list[tuple] = []
        sources: list[tuple] = []
        body_words = len(WORDS)

        def rows():  # type: ignore[no-untyped-def]
            for n in range(count):
                message_id = self.ids(Message)
                date = self.when((n + rng.random()) / count)
                connection_, folder = boxes[rng.randrange(len(boxes))]
                member = connection_.email_address
                unlinked = rng.random() < 0.05
                if unlinked:
                    sender = rng.choice(outsiders)
                    recipients = [member]
                    subject = f"{rng.choice(('Offer', 'Newsletter', 'Update', 'Event'))} {n}"
                    thread_key = hashlib.sha256(f"u{message_id}".encode()).hexdigest()
                    linked: list[int] = []
                else:
                    index = _pick(weights, rng)
                    client = clients[index]
                    contact = rng.choice(client["addresses"])
                    open_thread = threads.get(index)
                    if open_thread and rng.random() < 0.65:
                        thread_key, subject, length = open_thread
                        threads[index] = (thread_key, subject, length + 1)
                        subject = "Re: " + subject
                    else:
                        subject = rng.choice(SUBJECTS).format(
                            q=f"Q{rng.randint(1, 4)}",
                            m=date.strftime("%B"),
                            y=date.year,
                            n=rng.randint(1000, 99999),
                        )
                        thread_key = hashlib.sha256(f"t{message_id}".encode()).hexdigest()
                        threads[index] = (thread_key, subject, 1)
                    if rng.random() < 0.5:
                        sender, recipients = contact, [member]
                    else:
                        sender, recipients = member, [contact]
                    if rng.random() < 0.1:
                        recipients.append(rng.choice(members))
                    linked = [client["id"]]
                    if rng.random() < 0.03:  # copied to another client's contact
                        other = clients[rng.randrange(len(clients))]
                        if other["id"] != client["id"]:
                            recipients.append(other["addresses"][0])
                            linked.append(other["id"])
                start = rng.randrange(body_words)
                text = " ".join(
                    WORDS[(start + i) % body_words] for i in range(rng.randint(40, 300))
                )
                header_id = f"<{message_id}.{n}@{sender.rpartition('@')[2]}>"
                raw = (
                    f"Message-ID: {header_id}\r\nFrom: {sender}\r\nTo: {', '.join(recipients)}\r\n"
                    f"Subject: {subject}\r\nDate: {date:%a, %d %b %Y %H:%M:%S +0000}\r\n"
                    f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
                ).encode()
                participants = " " + " ".join(dict.fromkeys([sender, *recipients])) + " "
                created = date + datetime.timedelta(minutes=rng.randint(1, 30))
                for client_id in linked:
                    links.append(
                        (self.ids(MessageClientLink), message_id, client_id, created, date)
                    )
                sources.append(
                    (
                        self.ids(MessageSource),
                        message_id,
                        connection_.pk,
                        folder.pk,
                        next(uids[connection_.pk]),
                        "",
                        created,
                    )
                )
                # A realistic size for what the message was (attachments included).
                size = int(min(rng.lognormvariate(9.5, 1.3), 25_000_000)) + len(raw)
                pending_blobs.append(raw)
                if len(pending_blobs) >= 2000:
                    blobs_put_many(pending_blobs)
                    pending_blobs.clear()
                yield (
                    message_id,
                    firm.pk,
                    hashlib.sha256(f"mid:{header_id}".encode()).hexdigest(),
                    1,
                    hashlib.sha256(f"{date}|{sender}|{subject}".encode()).hexdigest(),
                    "",
                    header_id,
                    subject,
                    "",
                    sender,
                    json.dumps(recipients),
                    "[]",
                    "[]",
                    participants,
                    date,
                    "",
                    "",
                    thread_key,
                    text[:200],
                    text,
                    hashlib.sha256(raw).hexdigest(),
                    size,
                    False,
                    "",
                    created,
                    bool(linked),
                )

        columns = (
            "id", "firm_id", "key", "occurrence", "fingerprint", "date_source", "message_id",
            "subject", "from_name", "from_address", "to_addresses", "cc_addresses",
            "reply_to_addresses", "participants", "date", "in_reply_to", "references",
            "thread_key", "snippet", "text_body", "raw_sha256", "size", "parse_error",
            "parse_error_detail", "created", "linked",
        )  # fmt: skip
        # The raw mail goes to the blob store (written in parallel, 2,000 at a time) before
        # the rows that name it are committed.
        pending_blobs: list[bytes] = []
        copy_rows(Message, columns, rows())
        blobs_put_many(pending_blobs)
        # The stored link state the linking code keeps (mailsync.linking).
        copy_rows(
            MessageClientLink, ("id", "message_id", "client_id", "created", "message_date"), links
        )
        copy_rows(
            MessageSource,
            ("id", "message_id", "connection_id", "folder_id", "uid", "uidl", "created"),
            sources,
        )
        # A few outsiders a member chose to ignore.
        IgnoredAddress.objects.bulk_create(
            IgnoredAddress(firm=firm, normalized=a) for a in outsiders[: len(outsiders) // 10]
        )

    # --- invoices, deliveries and their events -----------------------------------------------

    def invoices(
        self,
        firm: Firm,
        clients: list[dict],
        owner: User,
        deliveries: int,
        problem_share: float,
        quiet: bool = False,
    ) -> int:
        """Invoices in date order with two deliveries each (two addresses, or a resend) and
        about three events per delivery; the newest delivery to one address of
        `problem_share` of the clients carries a problem. Returns the problem count."""
        rng = self.rng
        count = max(deliveries // 2, 1)
        weights = _weights(len(clients), 0.6, rng)
        chosen = [_pick(weights, rng) for _ in range(count)]
        troubled = rng.sample(range(len(clients)), max(int(len(clients) * problem_share), 1))
        # Each troubled client gets one more invoice at the very end, whose delivery fails.
        plan = [(index, None) for index in chosen] + [
            (index, DELIVERY_PROBLEMS[n % len(DELIVERY_PROBLEMS)])
            for n, index in enumerate(troubled)
        ]
        invoices, lines, delivery_rows, events = [], [], [], []
        suppressions = []
        total = len(plan)
        number = itertools.count(
            (Invoice.objects.filter(firm=firm).aggregate(m=models.Max("number"))["m"] or 0) + 1
        )
        for n, (index, problem) in enumerate(plan):
            client = clients[index]
            invoice_id = self.ids(Invoice)
            issued = self.when(min((n + rng.random()) / total, 0.999))
            newest = problem is not None or n > total - 300
            status = "sent" if newest or rng.random() < 0.1 else "paid"
            invoices.append(
                (
                    invoice_id,
                    firm.pk,
                    client["id"],
                    next(number),
                    "EUR",
                    issued.date(),
                    (issued + datetime.timedelta(days=14)).date(),
                    status,
                    "",
                    client["name"],
                    owner.pk,
                    issued,
                    issued,
                    issued + datetime.timedelta(days=10) if status == "paid" else None,
                )
            )
            for position in range(rng.randint(1, 3)):
                lines.append(
                    (
                        self.ids(InvoiceLine),
                        invoice_id,
                        rng.choice(("Bookkeeping", "Payroll", "VAT return", "Annual accounts")),
                        Decimal(rng.randint(1, 10)),
                        Decimal(rng.randint(40, 400)),
                        position,
                    )
                )
            addresses = client["addresses"][:2]
            targets = [addresses[0], addresses[-1] if len(addresses) > 1 else addresses[0]]
            for k, address in enumerate(targets):
                delivery_id = self.ids(Delivery)
                sent = issued + datetime.timedelta(seconds=30 + k)
                failing = problem if k == 0 else None
                # About 1.5% of old deliveries soft-bounced once (later sends cleared them).
                if failing is None and not newest and rng.random() < 0.015:
                    failing = DELIVERY_PROBLEMS[1]
                if failing:
                    code, state, kind, reply, enhanced, reason, diagnostic = failing
                else:
                    code, state = "", rng.choice(("delivered", "opened", "opened", "clicked"))
                delivery_rows.append(
                    (
                        delivery_id,
                        firm.pk,
                        invoice_id,
                        client["id"],
                        address,
                        address,
                        state,
                        code,
                        False,
                        f"<{delivery_id}@portal.test>",
                        f"esp-{delivery_id}",
                        f"v{delivery_id:x}",
                        sent,
                        sent,
                    )
                )
                events.append(
                    (self.ids(DeliveryEvent), delivery_id, "sent", "smtp", "", sent, "250", "", "",
                     "", sent)
                )  # fmt: skip
                if failing:
                    for repeat in range(2 if code == "delivery.blocked_repeated_failures" else 1):
                        at = sent + datetime.timedelta(minutes=5 + repeat)
                        events.append(
                            (self.ids(DeliveryEvent), delivery_id, kind, "webhook",
                             f"ev-{delivery_id}-{repeat}", at, reply, enhanced, reason,
                             diagnostic.format(a=address), at)
                        )  # fmt: skip
                    if code == "delivery.suppressed":
                        suppressions.append(address)
                else:
                    for m, kind_ in enumerate(("delivered", "opened")):
                        at = sent + datetime.timedelta(minutes=2 + m * 90)
                        events.append(
                            (self.ids(DeliveryEvent), delivery_id, kind_, "webhook",
                             f"ev-{delivery_id}-{m}", at, "", "", "", "", at)
                        )  # fmt: skip
        copy_rows(
            Invoice,
            ("id", "firm_id", "client_id", "number", "currency", "issue_date", "due_date",
             "status", "notes", "client_name", "created_by_id", "created", "sent_at", "paid_at"),
            invoices,
        )  # fmt: skip
        copy_rows(
            InvoiceLine,
            ("id", "invoice_id", "description", "quantity", "unit_price", "position"),
            lines,
        )
        copy_rows(
            Delivery,
            ("id", "firm_id", "invoice_id", "client_id", "address", "normalized", "status",
             "problem_code", "is_test", "message_id", "esp_message_id", "verp_token",
             "created", "updated"),
            delivery_rows,
        )  # fmt: skip
        copy_rows(
            DeliveryEvent,
            ("id", "delivery_id", "kind", "source", "event_id", "occurred_at", "reply_code",
             "status_code", "reason", "diagnostic", "created"),
            events,
        )  # fmt: skip
        Suppression.objects.bulk_create(
            Suppression(firm=firm, normalized=a, reason="hard_bounce")
            for a in dict.fromkeys(suppressions)
        )
        if quiet:
            return len(troubled)
        self.log(
            f"  {len(invoices):,} invoices, {len(delivery_rows):,} deliveries, "
            f"{len(events):,} events, {len(troubled):,} clients with a delivery problem"
        )
        return len(troubled)

    def firm_problems(self, firm: Firm, owner: User) -> None:
        """Domain checks that failed, a contact domain that takes no mail, stale imported
        settings and a note on one problem: the kinds that are not per delivery."""
        DomainCheckRun.objects.create(
            firm=firm,
            domain=firm.sending_domain,
            results=[
                {"name": "spf", "ok": False, "problem_code": "domain.spf_missing",
                 "summary": "No SPF record.", "answers": [], "publish": {}},
                {"name": "dmarc", "ok": False, "problem_code": "domain.dmarc_missing",
                 "summary": "No DMARC record.", "answers": [], "publish": {}},
                {"name": "dkim:s1", "ok": False, "problem_code": "domain.dkim_missing",
                 "summary": "No DKIM key.", "answers": [], "publish": {}},
            ],
        )  # fmt: skip
        AddressDomainCheck.objects.create(
            firm=firm,
            domain=DEAD_DOMAIN,
            ok=False,
            summary=f"{DEAD_DOMAIN} has no mail server (no MX, A or AAAA record).",
            checked=self.now,
        )
        delivery = Delivery.objects.filter(firm=firm).exclude(problem_code="").last()
        if delivery is not None:
            ProblemNote.objects.create(
                firm=firm,
                subject=f"delivery:{delivery.pk}",
                code=delivery.problem_code,
                note="Called the client, a new address is coming.",
                author=owner,
            )


def _delete_previous(out) -> None:  # type: ignore[no-untyped-def]
    """Remove what an earlier run made: its firms (slug scale-*) with every row under them,
    child tables first (Django's cascade would load a million rows into Python)."""
    firms = list(Firm.objects.filter(slug__startswith=SLUG_PREFIX).values_list("pk", flat=True))
    if not firms:
        return
    started = time.monotonic()
    in_firms = "IN (SELECT id FROM portal_firm WHERE slug LIKE 'scale-%%')"
    t = {m: m._meta.db_table for m in (Message, Delivery, Invoice, MailboxConnection, Client)}
    from django.apps import apps

    statements = [
        f"DELETE FROM mailsync_messageattachment WHERE message_id IN "
        f"(SELECT id FROM {t[Message]} WHERE firm_id {in_firms})",
        f"DELETE FROM mailsync_messageclientlink WHERE message_id IN "
        f"(SELECT id FROM {t[Message]} WHERE firm_id {in_firms})",
        f"DELETE FROM mailsync_messagesource WHERE message_id IN "
        f"(SELECT id FROM {t[Message]} WHERE firm_id {in_firms})",
        f"DELETE FROM {t[Message]} WHERE firm_id {in_firms}",
        f"DELETE FROM invoicing_deliveryevent WHERE delivery_id IN "
        f"(SELECT id FROM {t[Delivery]} WHERE firm_id {in_firms})",
        f"DELETE FROM invoicing_paylink WHERE invoice_id IN "
        f"(SELECT id FROM {t[Invoice]} WHERE firm_id {in_firms})",
        f"DELETE FROM {t[Delivery]} WHERE firm_id {in_firms}",
        f"DELETE FROM invoicing_invoiceline WHERE invoice_id IN "
        f"(SELECT id FROM {t[Invoice]} WHERE firm_id {in_firms})",
        f"DELETE FROM invoicing_payment WHERE invoice_id IN "
        f"(SELECT id FROM {t[Invoice]} WHERE firm_id {in_firms})",
        f"DELETE FROM {t[Invoice]} WHERE firm_id {in_firms}",
        f"DELETE FROM mailsync_mailboxfolder WHERE connection_id IN "
        f"(SELECT id FROM {t[MailboxConnection]} WHERE firm_id {in_firms})",
        f"DELETE FROM mailsync_outgoingserver WHERE connection_id IN "
        f"(SELECT id FROM {t[MailboxConnection]} WHERE firm_id {in_firms})",
        f"DELETE FROM mailsync_clientsender WHERE firm_id {in_firms}",
        f"DELETE FROM mailsync_outgoingaddress WHERE firm_id {in_firms}",
        f"DELETE FROM {t[MailboxConnection]} WHERE firm_id {in_firms}",
        f"DELETE FROM portal_document WHERE client_id IN "
        f"(SELECT id FROM {t[Client]} WHERE firm_id {in_firms})",
        f"DELETE FROM portal_contactaddress WHERE firm_id {in_firms}",
        f"DELETE FROM portal_contact WHERE client_id IN "
        f"(SELECT id FROM {t[Client]} WHERE firm_id {in_firms})",
    ]
    # Every other table with a firm_id column (a new one needs no change here).
    done = {"mailsync_clientsender", "mailsync_outgoingaddress", "portal_contactaddress"}
    done |= set(t.values())
    for model in apps.get_models():
        table = model._meta.db_table
        columns = {f.column for f in model._meta.concrete_fields}
        if "firm_id" in columns and table not in done:
            statements.append(f"DELETE FROM {table} WHERE firm_id {in_firms}")
    statements += [
        f"DELETE FROM {t[Client]} WHERE firm_id {in_firms}",
        "DELETE FROM portal_firm WHERE slug LIKE 'scale-%%'",
    ]
    users = list(Membership.objects.filter(firm_id__in=firms).values_list("user_id", flat=True))
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    # The members (their sessions, addresses and the rest go with them).
    User.objects.filter(pk__in=users).delete()
    out.write(
        f"deleted the {len(firms)} firms of the previous run ({time.monotonic() - started:.0f} s)"
    )


class Command(BaseCommand):
    help = (
        "Fill PostgreSQL with one large firm (10,000 clients, 1,000,000 messages, 200,000 "
        "deliveries by default) and 50 small ones, to measure the pages at scale."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=10_000)
        parser.add_argument("--contacts", type=int, default=None, help="default: 2.5 per client")
        parser.add_argument("--messages", type=int, default=1_000_000)
        parser.add_argument("--members", type=int, default=30)
        parser.add_argument("--deliveries", type=int, default=200_000)
        parser.add_argument("--problem-share", type=float, default=0.02)
        parser.add_argument("--small-firms", type=int, default=50)
        parser.add_argument("--seed", type=int, default=15)

    def handle(self, *args: object, **options: object) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("seed_scale writes with COPY: point DATABASE_URL at PostgreSQL.")
        started = time.monotonic()
        rng = random.Random(options["seed"])
        ids = Ids()
        seeder = Seeder(rng, ids, self.stdout)
        clients_n = int(options["clients"])
        contacts_n = int(options["contacts"] or clients_n * 5 // 2)
        with transaction.atomic():
            _delete_previous(self.stdout)
            ids.prime(
                Client, Contact, ContactAddress, LinkedAddress, Message, MessageClientLink,
                MessageSource, Invoice, InvoiceLine, Delivery, DeliveryEvent,
            )  # fmt: skip
            step = time.monotonic()
            firm, users = seeder.firm(
                "scale-main", "Alder & Birch Accounting", "alder-birch.test", options["members"]
            )
            boxes = seeder.mailboxes(firm, users, "alder-birch.test", failing=4, excluded=2)
            clients = seeder.clients(firm, clients_n, contacts_n, "m")
            self.stdout.write(
                f"scale-main: {clients_n:,} clients, {contacts_n:,} contacts "
                f"({time.monotonic() - step:.0f} s)"
            )
            step = time.monotonic()
            seeder.messages(firm, clients, boxes, int(options["messages"]))
            self.stdout.write(
                f"  {options['messages']:,} messages ({time.monotonic() - step:.0f} s)"
            )
            step = time.monotonic()
            seeder.invoices(
                firm, clients, users[0], int(options["deliveries"]), options["problem_share"]
            )
            seeder.firm_problems(firm, users[0])
            self.stdout.write(f"  invoicing ({time.monotonic() - step:.0f} s)")
            step = time.monotonic()
            for n in range(int(options["small_firms"])):
                small, members = seeder.firm(
                    f"scale-small-{n:02d}", f"{rng.choice(FIRST)} Accounting {n}",
                    f"small{n}.test", 2,
                )  # fmt: skip
                small_boxes = seeder.mailboxes(small, members, f"small{n}.test", 0, 0)
                small_clients = seeder.clients(small, 20, 40, f"s{n}-")
                seeder.messages(small, small_clients, small_boxes, 200)
                seeder.invoices(small, small_clients, members[0], 40, 0.05, quiet=True)
            self.stdout.write(
                f"{options['small_firms']} small firms ({time.monotonic() - step:.0f} s)"
            )
            ids.sync_sequences()
        step = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE)")  # visibility map too: index-only scans
        self.stdout.write(f"VACUUM ANALYZE ({time.monotonic() - step:.0f} s)")
        self.stdout.write(
            f"done in {time.monotonic() - started:.0f} s. Sign in as owner@alder-birch.test "
            f"with password {PASSWORD}"
        )
