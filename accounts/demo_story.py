"""The demo's story, made by running the product: invoices sent through the mail simulator,
sample mail stored through the sync's store path, a mailbox failing through the real failure
path. What the portal shows afterwards is what it would show for real mail.

Each step looks for what it made before and does nothing when it is there, so running
`seed_demo` again changes nothing.
"""

from __future__ import annotations

import imaplib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from invoicing.delivery import simulator
from invoicing.delivery.sender import deliveries_send
from invoicing.invoices import LineData, invoice_create, invoice_void
from invoicing.models import Invoice, PayLink
from invoicing.paylinks import pay_link_viewed
from invoicing.payments.recording import payment_record
from invoicing.sending import invoice_send
from portal.addresses import validate_address
from portal.models import Client, Contact, ContactAddress, Firm

SAMPLE_MAIL = Path(__file__).parent / "demo_mail"
SIM = simulator.SIMULATOR_DOMAIN

# (client, contact, address, what happens to its invoice)
STORY_CLIENTS = [
    ("Hansen Farm", "Ingrid Hansen", "ingrid@hansen-farm.example", None),
    ("Nowak Bakery", "Piotr Nowak", "piotr@nowak-bakery.example", None),
    ("Popescu Design", "Ioana Popescu", "ioana@popescu-design.example", None),
    ("Berg Builders", "Lars Berg", f"bounce@{SIM}", "sent"),  # hard bounce, blocked
    ("Virtanen Studio", "Mikko Virtanen", f"complaint@{SIM}", "sent"),
    ("García Dental", "Lucía García", f"success@{SIM}", "paid"),
    ("Moreno Logistics", "Sofia Moreno", f"success+moreno@{SIM}", "viewed"),
    ("Olsen Consulting", "James Olsen", f"soft@{SIM}", "sent"),
    ("Smith Design", "Marta Smith", f"delayed@{SIM}", "sent"),
    ("Popescu Farm", "Ioana Popescu", f"ooto@{SIM}", "sent"),
    ("Berg Dental", "Anna Berg", f"success+draft@{SIM}", "draft"),
    ("Virtanen Logistics", "Lars Virtanen", f"success+void@{SIM}", "void"),
]


def story_seed(*, firm: Firm, owner: object, member: object, other_member: object) -> None:
    _billing(firm)
    clients = {
        name: _story_client(firm, name, contact, address)
        for name, contact, address, _w in STORY_CLIENTS
    }
    _invoices(firm, owner, clients)
    _synced_mail(firm, member)
    _failing_mailbox(firm, other_member)
    _domain_check(firm)


def _story_client(firm: Firm, name: str, contact_name: str, address: str) -> Client:
    client, created = Client.objects.get_or_create(
        firm=firm, display_name=name, defaults={"kind": Client.Kind.COMPANY}
    )
    if created:
        Client.objects.filter(pk=client.pk).update(
            billing_address=f"{name}\nMain Street 1", tax_id=f"DEMO-{client.pk:05d}"
        )
        contact = Contact.objects.create(client=client, name=contact_name)
        valid = validate_address(address, check_deliverability=False)
        ContactAddress.objects.create(
            contact=contact,
            firm=firm,
            address=valid.address,
            normalized=valid.normalized,
            is_primary=True,
            receives_invoices=True,
        )
    return client


def _billing(firm: Firm) -> None:
    from invoicing.invoices import billing_settings_update
    from invoicing.models import FirmBillingSettings

    if FirmBillingSettings.objects.filter(firm=firm).exists():
        return
    billing_settings_update(
        firm=firm,
        legal_name="Demo Accounting Ltd",
        address="Storgata 1\n0155 Oslo\nNorway",
        tax_id="NO 999 999 999 MVA",
        bank_details="Demo Accounting Ltd\nIBAN NO93 8601 1117 947\nBIC DNBANOKK",
        payment_instructions="Payment within 14 days.",
        currency="EUR",
    )


def _invoices(firm: Firm, owner: object, clients: dict[str, Client]) -> None:
    if Invoice.objects.filter(firm=firm).exists():
        return
    today = timezone.localdate()
    later: list[simulator.LaterOutcome] = []
    with override_settings(
        EMAIL_BACKEND=simulator.SimulatorBackend.__module__ + ".SimulatorBackend"
    ):
        for n, (name, _contact, _address, what) in enumerate(STORY_CLIENTS):
            if what is None:
                continue
            invoice = invoice_create(
                firm=firm,
                client=clients[name],
                created_by=owner,
                issue_date=today - timedelta(days=20 - n),
                due_date=today + timedelta(days=10 + n),
                lines=[
                    LineData("Bookkeeping, October", Decimal("1"), Decimal("240.00")),
                    LineData("Payroll, 6 employees", Decimal("6"), Decimal("12.50")),
                ],
            )
            if what == "draft":
                continue
            if what == "void":
                invoice_void(invoice=invoice)
                continue
            deliveries = invoice_send(invoice=invoice)
            with simulator.outcomes_held() as held:
                deliveries_send(delivery_ids=[d.pk for d in deliveries])
            later.extend(held)
            invoice.refresh_from_db()
            if what == "viewed":
                for link in PayLink.objects.filter(invoice=invoice).select_related(
                    "invoice", "delivery"
                ):
                    pay_link_viewed(link=link)
            elif what == "paid":
                payment_record(
                    invoice=invoice,
                    amount=invoice.total,
                    provider="offline",
                    reference="Bank transfer 2026-11-12",
                    recorded_by=owner,
                )
        # What the simulated recipients' systems answer later (delivered, complaint, a delay).
        simulator.outcomes_run(later)


def _synced_mail(firm: Firm, member: object) -> None:
    from mailsync.models import MailboxConnection
    from mailsync.services import connection_create, connection_record_success

    existing = MailboxConnection.objects.filter(
        firm=firm, email_address="anna.staff@demo.test"
    ).first()
    if existing is not None:
        _sends_through_demo_server(existing)
        return
    connection = connection_create(
        firm=firm,
        owner=member,
        kind=MailboxConnection.Kind.IMAP,
        email_address="anna.staff@demo.test",
        host="imap.demo.test",
        port=993,
        security=MailboxConnection.Security.SSL,
        username="anna.staff@demo.test",
        password="demo-mailbox-password",  # noqa: S106 - a demo mailbox nobody can reach
    )
    imported = _store_samples(connection, sorted(SAMPLE_MAIL.glob("*.eml")))
    connection_record_success(connection=connection, imported=imported)
    _sends_through_demo_server(connection)


def _sends_through_demo_server(connection: object) -> None:
    """Anna writes to clients from the Email tab through the demo's sending server
    (mailsync.demo_smtp, started by scripts/run.sh): what she sends lands in the Outbox."""
    from django.conf import settings

    from mailsync.models import OutgoingServer

    OutgoingServer.objects.update_or_create(
        connection=connection,
        defaults={"host": "127.0.0.1", "port": settings.DEMO_SMTP_PORT, "security": "none"},
    )


def _store_samples(connection: object, paths: list[Path]) -> int:
    """Store sample messages as a sync of the connection's INBOX stores what it fetched."""
    from mailsync.engine import Fetched, SyncReport, _commit_batch, _lz4_available
    from mailsync.models import MailboxFolder
    from mailsync.parsing import messages_parse

    folder = MailboxFolder.objects.get(connection=connection, name="INBOX")
    MailboxFolder.objects.filter(pk=folder.pk).update(uidvalidity=1)
    folder.uidvalidity = 1
    raws = [_crlf(path.read_bytes()) for path in paths]
    items = [Fetched(raw=raw, internaldate=None, uid=uid) for uid, raw in enumerate(raws, start=1)]
    parsed, _cpu = messages_parse([(item.raw, item.internaldate) for item in items])
    # The sync's own store step: messages, sources, links to clients, attachments as documents.
    _commit_batch(
        connection=connection,
        folder=folder,
        items=items,
        parsed=parsed,
        report=SyncReport(),
        last_uid=len(items),
        lz4=_lz4_available(),
    )
    return len(items)


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _failing_mailbox(firm: Firm, member: object) -> None:
    from mailsync.errors import classify
    from mailsync.models import MailboxConnection
    from mailsync.services import connection_create, connection_record_failure

    address = "mikko.staff@demo.test"
    if MailboxConnection.objects.filter(firm=firm, email_address=address).exists():
        return
    connection = connection_create(
        firm=firm,
        owner=member,
        kind=MailboxConnection.Kind.IMAP,
        email_address=address,
        host="imap.demo.test",
        port=993,
        security=MailboxConnection.Security.SSL,
        username=address,
        password="old-password",  # noqa: S106 - the password the server no longer takes
    )
    # Mail it synced before: the clients it reaches show the failing mailbox and its member.
    _store_samples(connection, [SAMPLE_MAIL / "03-nowak-reply.eml"])
    # What the server said when the member's password was changed elsewhere.
    error = classify(
        imaplib.IMAP4.error("[AUTHENTICATIONFAILED] Authentication failed."), step="login"
    )
    connection_record_failure(connection=connection, error=error)


def _domain_check(firm: Firm) -> None:
    from troubleshooting.models import DomainCheckRun
    from troubleshooting.services import domain_checks_run

    if DomainCheckRun.objects.filter(firm=firm).exists():
        return
    if not firm.sending_domain:
        Firm.objects.filter(pk=firm.pk).update(sending_domain="demo-accounting.test")
        firm.sending_domain = "demo-accounting.test"
    with transaction.atomic():
        domain_checks_run(firm=firm)
