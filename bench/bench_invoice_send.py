"""Invoice notifications over SMTP: the portal's real sending path against raw smtplib.

    .venv/bin/python bench/bench_invoice_send.py [--count 10000] [--profile] [--batched]

Sets up a throwaway database (a PostgreSQL database beside $DATABASE_URL's, dropped at the
end, or a temporary SQLite file), a firm with --count clients of one invoice address each
and one draft invoice each, and an aiosmtpd server on a free loopback port (a child process
that accepts everything). Then, in one run:

1. portal: `invoice_send` for every invoice (the Delivery rows, as the Send button does) and
   the Celery task `deliveries_send_task` for what each queued, called synchronously in this
   process in place of a worker (no broker): rendering, Pay Now links, SMTP through Django's
   SMTP backend and the delivery events.
2. baseline: the same messages, built once beforehand with the portal's builder, sent with
   raw smtplib over one connection; and over one connection per message, which is what
   the portal does when every invoice is its own task.

Prints wall times, messages/s and the ratios. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import pstats
import smtplib
import sys
import time
from decimal import Decimal
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit  # found through the sys.path line above


def rate(count: int, seconds: float) -> str:
    return f"{seconds:8.2f} s  {count / seconds:8.0f} messages/s"


def create_invoices(firm, clients):  # type: ignore[no-untyped-def]
    from invoicing.models import Invoice, InvoiceLine

    due = datetime.date.today() + datetime.timedelta(days=30)
    first = Invoice.objects.filter(firm=firm).count() + 1
    invoices = Invoice.objects.bulk_create(
        Invoice(
            firm=firm,
            client=client,
            number=first + n,
            due_date=due,
            client_name=client.display_name,
        )
        for n, client in enumerate(clients)
    )
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            description=description,
            quantity=Decimal(quantity),
            unit_price=Decimal(price),
            position=position,
        )
        for invoice in invoices
        for position, (description, quantity, price) in enumerate(
            [("Bookkeeping, March", "1", "240.00"), ("Payroll, 4 employees", "4", "12.50")]
        )
    )
    # The service reads the invoice with its firm and client, as the view hands it over.
    pks = [invoice.pk for invoice in invoices]
    return list(Invoice.objects.select_related("firm", "client").filter(pk__in=pks).order_by("pk"))


def portal_send(invoices, max_seconds: float):  # type: ignore[no-untyped-def]
    """Create the deliveries, then run the send task for each batch they queued.

    The task's `.delay` is replaced by a list: that list is the broker, and the loop below
    is the worker, minus the broker's own cost. Both loops stop at `max_seconds` so a slow
    database cannot keep the bench running; the caller reports what was done by then.
    """
    from invoicing.services import invoice_send
    from invoicing.tasks import deliveries_send_task

    queued: list[list[int]] = []
    start = time.perf_counter()
    deadline = start + max_seconds
    with mock.patch.object(deliveries_send_task, "delay", side_effect=queued.append):
        for invoice in invoices:
            if time.perf_counter() > deadline:
                break
            invoice_send(invoice=invoice)
    created = time.perf_counter()
    done_batches = 0
    for ids in queued:
        if time.perf_counter() > deadline:
            break
        deliveries_send_task(ids)  # the task's body, synchronously
        done_batches += 1
    done = time.perf_counter()
    return queued[:done_batches], created - start, done - created


def prepared_messages():  # type: ignore[no-untyped-def]
    """Every sent delivery's message as bytes, built with the portal's builder."""
    import secrets

    from django.core.mail.message import sanitize_address

    from invoicing.emails import invoice_email_build
    from invoicing.models import Delivery

    deliveries = Delivery.objects.select_related("invoice__firm", "invoice__client").order_by("pk")
    messages = []
    for delivery in deliveries:
        email = invoice_email_build(
            delivery=delivery, invoice=delivery.invoice, pay_token=secrets.token_urlsafe(32)
        )
        # What Django's SMTP backend hands to smtplib for this message.
        sender = sanitize_address(email.from_email, email.encoding or "utf-8")
        recipients = [sanitize_address(a, email.encoding or "utf-8") for a in email.recipients()]
        messages.append((sender, recipients, email.message().as_bytes(linesep="\r\n")))
    return messages


def raw_one_connection(port: int, messages) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        for sender, recipients, data in messages:
            smtp.sendmail(sender, recipients, data)
    return time.perf_counter() - start


def raw_connection_each(port: int, messages) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for sender, recipients, data in messages:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail(sender, recipients, data)
    return time.perf_counter() - start


def queries_per_notification(firm) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """SQL statements for one more invoice to one address: creating, then sending."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from invoicing.services import invoice_send
    from invoicing.tasks import deliveries_send_task

    _, clients = benchkit.create_firm_with_clients(1, prefix="probe", firm=firm)
    [invoice] = create_invoices(firm, clients)
    batches: list[list[int]] = []
    with (
        mock.patch.object(deliveries_send_task, "delay", side_effect=batches.append),
        CaptureQueriesContext(connection) as creating,
    ):
        invoice_send(invoice=invoice)
    with CaptureQueriesContext(connection) as sending:
        for ids in batches:
            deliveries_send_task(ids)
    return len(creating), len(sending)


def profiled(func, *args):  # type: ignore[no-untyped-def]
    profile = cProfile.Profile()
    result = profile.runcall(func, *args)
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative")):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(key).print_stats(10)
        body = out.getvalue()
        print(f"\n--- cProfile, top 10 by {title} ---")
        print(body[body.find("ncalls") :].rstrip())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="invoices (one address each)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the portal's path (inflates its time)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=600,
        help="stop the portal's path after this long and report what it sent (default 600)",
    )
    parser.add_argument(
        "--batched",
        action="store_true",
        help="also send every invoice again as ONE task (one connection) to show its cost",
    )
    args = parser.parse_args()
    count = args.count

    with benchkit.temp_dir("bench-send-") as var_dir:
        sink = benchkit.SMTPSink()
        try:
            with benchkit.throwaway_database(var_dir) as database_url:
                env = benchkit.portal_env(
                    database_url=database_url,
                    var_dir=var_dir,
                    EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                    EMAIL_HOST="127.0.0.1",
                    EMAIL_PORT=str(sink.port),
                    EMAIL_USE_TLS="0",
                    EMAIL_USE_SSL="0",
                    EMAIL_HOST_USER="",
                    EMAIL_HOST_PASSWORD="",
                    EMAIL_TIMEOUT="10",
                    # Plain-SMTP set-ups send with a per-delivery VERP Return-Path.
                    BOUNCE_ADDRESS="bounces@bounce.test",
                )
                benchkit.django_start(env)
                run(args, count, sink)
        finally:
            sink.stop()


def run(args, count: int, sink: benchkit.SMTPSink) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection

    from invoicing.models import Delivery

    print(f"database: {connection.vendor}; SMTP sink: aiosmtpd on 127.0.0.1:{sink.port}")
    start = time.perf_counter()
    firm, clients = benchkit.create_firm_with_clients(count)
    invoices = create_invoices(firm, clients)
    print(f"set-up: {count} clients and invoices in {time.perf_counter() - start:.1f} s\n")

    if args.profile:
        queued, create_s, send_s = profiled(portal_send, invoices, args.max_seconds)
    else:
        queued, create_s, send_s = portal_send(invoices, args.max_seconds)
    portal_s = create_s + send_s
    sent = Delivery.objects.filter(status=Delivery.Status.SENT).count()
    received = sink.received()
    if sent < count:
        print(f"WARNING: stopped at --max-seconds: {sent} of {count} sent; figures are for those")
        count = sent
    if received != sent:
        print(f"WARNING: {sent} deliveries recorded sent, {received} received by the server")

    start = time.perf_counter()
    messages = prepared_messages()
    build_s = time.perf_counter() - start
    size = sum(len(m[2]) for m in messages) / len(messages)
    raw_s = raw_one_connection(sink.port, messages)
    raw_each_s = raw_connection_each(sink.port, messages)

    print(f"{count} invoice notifications, ~{size / 1024:.1f} KiB each")
    if len(queued) == count:
        print(
            f"NOTE: invoice_send queues one task per invoice, and each task opens its own SMTP "
            f"connection: {len(queued)} connections for {count} messages"
        )
    else:
        print(f"tasks queued: {len(queued)} (one SMTP connection each)")
    if args.profile:
        print("(--profile: the portal's times below are inflated by cProfile)")
    print(f"portal: invoice_send (deliveries)   {rate(count, create_s)}")
    print(f"portal: deliveries_send_task        {rate(count, send_s)}")
    print(f"portal: total                       {rate(count, portal_s)}")
    print(f"builder alone (invoice_email_build) {rate(count, build_s)}  (not in the baseline)")
    print(f"raw smtplib, one connection         {rate(count, raw_s)}")
    print(f"raw smtplib, connection per message {rate(count, raw_each_s)}")
    print(f"ratio portal total / raw one connection: {portal_s / raw_s:.2f}x  (aim <= 1.3x)")
    print(f"ratio portal send task / raw one connection: {send_s / raw_s:.2f}x")
    print(f"ratio portal send task / raw connection per message: {send_s / raw_each_s:.2f}x")

    if args.batched:
        from invoicing.services import invoice_send
        from invoicing.tasks import deliveries_send_task

        # The same invoices again (a resend: new deliveries and links), all ids in ONE task,
        # which is one SMTP connection: what a bulk send could do.
        batches: list[list[int]] = []
        with mock.patch.object(deliveries_send_task, "delay", side_effect=batches.append):
            for invoice in invoices:
                invoice_send(invoice=invoice)
        ids = [pk for batch in batches for pk in batch]
        start = time.perf_counter()
        deliveries_send_task(ids)
        batched_s = time.perf_counter() - start
        print(f"portal: ONE task for all (resend)   {rate(len(ids), batched_s)}")
        print(f"ratio one task / raw one connection: {batched_s / raw_s:.2f}x")

    creating, sending = queries_per_notification(firm)
    print(f"SQL statements for one notification: {creating} creating, {sending} sending")


if __name__ == "__main__":
    main()
