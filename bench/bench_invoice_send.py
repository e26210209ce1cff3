"""Invoice notifications over SMTP: the portal's real sending path against raw smtplib.

    .venv/bin/python bench/bench_invoice_send.py [--count 10000] [--single-count 1000]
        [--db postgres|sqlite] [--profile] [--no-pipelining]

Sets up a throwaway database (by default PostgreSQL, as in production: a database beside
$DATABASE_URL's, or beside postgres://postgres@127.0.0.1:5432/portal, dropped at the end;
--db sqlite for a temporary SQLite file), a firm with --count clients of one invoice address
each and one draft invoice each, and an aiosmtpd server on a free loopback port (a child
process that accepts everything and, as Postfix and Exim do, advertises PIPELINING; aiosmtpd
itself does not, and `--no-pipelining` leaves it out). Then, in one run:

1. portal, bulk: `invoices_send_bulk` for all the invoices (the Delivery rows, as "Send all
   selected" does) and the Celery task `deliveries_send_task` for each chunk it queued
   (SEND_CHUNK deliveries, one SMTP connection each), called synchronously in this process
   in place of a worker (no broker). The task claims SEND_GROUP deliveries at a time in one
   transaction (with their Pay Now links), sends them through Django's SMTP backend while a
   thread builds the next emails, and records the group's outcomes in one transaction.
2. portal, one invoice at a time: `invoice_send` and its task for each of --single-count
   more invoices (the Send button on one invoice: one task and one connection each).
3. baseline: the bulk path's messages, built beforehand with the portal's builder (the
   envelope and bytes the send task hands to smtplib), sent with raw smtplib over one
   connection; and over one connection per message. smtplib never pipelines: the baseline
   waits for each reply (four round trips per email), the portal pipelines when the server
   offers it (two).

Django's URL resolver is set up before the clock starts (a worker pays that once, at its
first task, 0.3-0.6 s here): the figures are per email.

Prints wall times, messages/s, the ratios and the load average before and after (the
machine may be shared: compare runs only with their load). No assertions: figures only.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import os
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


def portal_send_bulk(invoices, max_seconds: float):  # type: ignore[no-untyped-def]
    """`invoices_send_bulk`, then the send task for each chunk it queued.

    The task's `.delay` is replaced by a list: that list is the broker, and the loop below
    is the worker, minus the broker's own cost. The loop stops at `max_seconds` so a slow
    database cannot keep the bench running; the caller reports what was done by then.
    """
    from invoicing.delivery.tasks import deliveries_send_task
    from invoicing.sending import invoices_send_bulk

    queued: list[list[int]] = []
    start = time.perf_counter()
    deadline = start + max_seconds
    with mock.patch.object(deliveries_send_task, "delay", side_effect=queued.append):
        invoices_send_bulk(invoices=invoices)
    created = time.perf_counter()
    done_batches = 0
    for ids in queued:
        if time.perf_counter() > deadline:
            break
        deliveries_send_task(ids)  # the task's body, synchronously
        done_batches += 1
    done = time.perf_counter()
    return queued[:done_batches], created - start, done - created


def portal_send_single(invoices, max_seconds: float):  # type: ignore[no-untyped-def]
    """`invoice_send` and its task per invoice: the Send button, one invoice at a time."""
    from invoicing.delivery.tasks import deliveries_send_task
    from invoicing.sending import invoice_send

    queued: list[list[int]] = []
    start = time.perf_counter()
    deadline = start + max_seconds
    with mock.patch.object(deliveries_send_task, "delay", side_effect=queued.append):
        for invoice in invoices:
            if time.perf_counter() > deadline:
                break
            invoice_send(invoice=invoice)
    created = time.perf_counter()
    for ids in queued:
        if time.perf_counter() > deadline:
            break
        deliveries_send_task(ids)
    done = time.perf_counter()
    return len(queued), created - start, done - created


def prepared_messages(delivery_ids):  # type: ignore[no-untyped-def]
    """These deliveries' envelopes and bytes, built with the portal's builder."""
    import secrets

    from invoicing.delivery.models import Delivery
    from invoicing.emails import InvoiceEmailBuilder

    deliveries = (
        Delivery.objects.filter(pk__in=delivery_ids)
        .select_related("invoice__firm", "invoice__client")
        .prefetch_related("invoice__lines")
        .order_by("pk")
    )
    messages = []
    builder = InvoiceEmailBuilder()  # as the sender uses it: one per task
    for delivery in deliveries:
        email = builder.build(
            delivery=delivery,
            invoice=delivery.invoice,
            pay_token=secrets.token_urlsafe(32),
            lines=list(delivery.invoice.lines.all()),
        )
        # What the send task hands to smtplib (what Django's SMTP backend would: a test
        # compares the bytes).
        envelope = builder.envelope(email)
        messages.append((envelope.sender, envelope.recipients, envelope.data))
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


def queries_per_notification(firm, invoices: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """SQL statements per notification for `invoices` more invoices to one address each:
    creating, then sending (bulk path when invoices > 1, else `invoice_send`)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from invoicing.delivery.tasks import deliveries_send_task
    from invoicing.sending import invoice_send, invoices_send_bulk

    _, clients = benchkit.create_firm_with_clients(invoices, prefix="probe", firm=firm)
    created = create_invoices(firm, clients)
    batches: list[list[int]] = []
    with (
        mock.patch.object(deliveries_send_task, "delay", side_effect=batches.append),
        CaptureQueriesContext(connection) as creating,
    ):
        if invoices == 1:
            invoice_send(invoice=created[0])
        else:
            invoices_send_bulk(invoices=created)
    with CaptureQueriesContext(connection) as sending:
        for ids in batches:
            deliveries_send_task(ids)
    return len(creating) / invoices, len(sending) / invoices


PROFILE_TOP = int(os.environ.get("BENCH_PROFILE_TOP", "10"))


def profiled(func, *args):  # type: ignore[no-untyped-def]
    profile = cProfile.Profile()
    result = profile.runcall(func, *args)
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative")):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(key).print_stats(PROFILE_TOP)
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
        "--single-count",
        type=int,
        default=1000,
        help="invoices sent one at a time with invoice_send, for comparison (default 1000)",
    )
    parser.add_argument(
        "--no-pipelining",
        action="store_true",
        help="the SMTP sink does not advertise PIPELINING (the portal then waits per command)",
    )
    parser.add_argument(
        "--db", choices=["postgres", "sqlite"], default="postgres", help="default: postgres"
    )
    args = parser.parse_args()
    count = args.count

    with benchkit.temp_dir("bench-send-") as var_dir:
        sink = benchkit.SMTPSink(pipelining=not args.no_pipelining)
        try:
            with benchkit.throwaway_database(var_dir, args.db) as database_url:
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
    from django.urls import reverse

    from invoicing.delivery.models import Delivery
    from invoicing.delivery.sender import SEND_GROUP
    from invoicing.enqueue import SEND_CHUNK

    print(f"load average before: {load_average()}")
    print(f"database: {connection.vendor}; SMTP sink: aiosmtpd on 127.0.0.1:{sink.port}")
    offered = "advertises" if not args.no_pipelining else "does not advertise"
    print(f"the sink {offered} PIPELINING; the raw smtplib baseline never pipelines")
    start = time.perf_counter()
    firm, clients = benchkit.create_firm_with_clients(count)
    invoices = create_invoices(firm, clients)
    _, single_clients = benchkit.create_firm_with_clients(
        args.single_count, prefix="single", firm=firm
    )
    single_invoices = create_invoices(firm, single_clients)
    reverse("invoicing:pay", args=["warm-up"])  # the URL resolver's one-off set-up
    print(
        f"set-up: {count} + {args.single_count} clients and invoices in "
        f"{time.perf_counter() - start:.1f} s\n"
    )

    if args.profile:
        queued, create_s, send_s = profiled(portal_send_bulk, invoices, args.max_seconds)
    else:
        queued, create_s, send_s = portal_send_bulk(invoices, args.max_seconds)
    portal_s = create_s + send_s
    bulk_ids = [pk for chunk in queued for pk in chunk]
    sent = Delivery.objects.filter(pk__in=bulk_ids, status=Delivery.Status.SENT).count()
    received = sink.received()
    if sent < count:
        print(f"WARNING: stopped at --max-seconds: {sent} of {count} sent; figures are for those")
        count = sent
    if received != sent:
        print(f"WARNING: {sent} deliveries recorded sent, {received} received by the server")

    single_tasks, single_create_s, single_send_s = portal_send_single(
        single_invoices, args.max_seconds
    )
    single_s = single_create_s + single_send_s

    start = time.perf_counter()
    messages = prepared_messages(bulk_ids)
    build_s = time.perf_counter() - start
    size = sum(len(m[2]) for m in messages) / len(messages)
    raw_s = raw_one_connection(sink.port, messages)
    raw_each_s = raw_connection_each(sink.port, messages)

    print(f"{count} invoice notifications, ~{size / 1024:.1f} KiB each")
    print(
        f"bulk: {len(queued)} tasks of up to {SEND_CHUNK} deliveries, one SMTP connection each, "
        f"claimed and recorded in groups of {SEND_GROUP}"
    )
    if args.profile:
        print("(--profile: the portal's bulk times below are inflated by cProfile)")
    print(f"portal bulk: invoices_send_bulk         {rate(count, create_s)}")
    print(f"portal bulk: deliveries_send_task       {rate(count, send_s)}")
    print(f"portal bulk: total                      {rate(count, portal_s)}")
    n = args.single_count
    print(f"portal single ({n}, {single_tasks} tasks): invoice_send {rate(n, single_create_s)}")
    print(f"portal single ({n}): deliveries_send_task  {rate(n, single_send_s)}")
    print(f"portal single ({n}): total                 {rate(n, single_s)}")
    print(f"builder alone (InvoiceEmailBuilder)     {rate(count, build_s)}  (not in the baseline)")
    print(f"raw smtplib, one connection             {rate(count, raw_s)}")
    print(f"raw smtplib, connection per message     {rate(count, raw_each_s)}")
    print(f"ratio portal bulk total / raw one connection: {portal_s / raw_s:.2f}x  (aim <= 1.3x)")
    print(f"ratio portal bulk send task / raw one connection: {send_s / raw_s:.2f}x")
    single_rate = n / single_s
    print(
        f"ratio portal single total / raw one connection: "
        f"{(count / raw_s) / single_rate:.2f}x (per message)"
    )
    print(
        f"ratio portal single send task / raw connection per message: "
        f"{(count / raw_each_s) / (n / single_send_s):.2f}x (per message)"
    )

    creating, sending = queries_per_notification(firm, 100)
    print(f"SQL per notification, bulk of 100: {creating:.1f} creating, {sending:.1f} sending")
    creating, sending = queries_per_notification(firm, 1)
    print(f"SQL per notification, one invoice: {creating:.0f} creating, {sending:.0f} sending")
    print(f"load average after: {load_average()}")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
