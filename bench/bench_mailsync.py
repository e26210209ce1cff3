"""Initial and incremental mailbox sync into PostgreSQL, with mbsync (isync) as the baseline.

    .venv/bin/python bench/bench_mailsync.py [--sizes 1000,10000] [--profile] [--keep]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/...

For each size N: a throwaway Dovecot (tests/servers/dovecot.py) gets a user whose Maildir
is filled by writing files directly with N realistic messages (2-50 KB text/HTML, about 10%
with a 50-500 KB attachment, dates within the last 60 days, some from and to the contacts of
the firm the bench creates). Then, against the same mailbox:

(a) the portal's initial sync (`mailsync.engine.mailbox_sync`) in a child process, so that
    the figures cover the sync alone, until everything it promises is committed: wall time,
    messages/s, CPU of the sync process and of the engine's parse process, and the peak RSS
    of each (the sync process's VmHWM after resetting it through /proc/self/clear_refs once
    Django is set up, plus the RSS before the sync for comparison; the parse process's own
    VmHWM, sampled while it lives);
(b) a second `mailbox_sync` of the unchanged mailbox in the same child (incremental);
(c) `mbsync -a` (the SERVICES.md recipe) pulling the same INBOX into an empty Maildir,
    twice; the faster run is the baseline.

DATABASE_URL (PostgreSQL only) names a database that is created if missing and never
dropped; each size gets a schema of its own in it (migrated from scratch, dropped at the end
unless --keep). Settings are portal.settings with DEBUG=0 (DEBUG=1 would keep every SQL
statement in memory and inflate the RSS figure), a throwaway SECRET_KEY and a generated
MAILSYNC_FERNET_KEYS; documents go to a temporary MEDIA_ROOT. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.header
import email.utils
import json
import os
import quopri
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import benchkit  # noqa: E402 - puts the repo root on sys.path

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_bench"
MEMBER = ("Dana Reed", "dana@alder.test")

# The firm's clients: (client name, contact name, address). Messages use these addresses,
# sometimes in other letter cases, so linking and documents happen as in real use.
CLIENTS = [
    ("Kowalski Bakery Ltd", "Anna Kowalski", "anna@kowalski-bakery.test"),
    ("Müller Haus GmbH", "Jürgen Müller", "j.mueller@muellerhaus.test"),
    ("Harbor Freight Partners", "Sam Ortega", "sam.ortega@harborfp.test"),
    ("Green Leaf Dental", "Priya Shah", "office@greenleafdental.test"),
    ("Nordic Timber AS", "Ola Nordmann", "ola@nordictimber.test"),
    ("Blue Door Studio", "Zoë Martin", "zoe@bluedoor.test"),
    ("Oak & Iron Joinery", "Tom Baker", "tom@oakiron.test"),
    ("Riverside Café", "Lucía Gómez", "lucia@riversidecafe.test"),
    ("Patel Pharmacy", "Ravi Patel", "ravi.patel@patelpharmacy.test"),
    ("Summit IT Services", "Ewa Nowak", "accounts@summit-it.test"),
    ("Lindqvist Design", "Karin Lindqvist", "karin@lindqvist.test"),
    ("Brightside Nursery", "Grace Okafor", "grace@brightside.test"),
]
OTHERS = [
    ("Alder & Birch Billing", "billing@alder.test"),
    ("Chris Young", "chris@alder.test"),
    ("HMRC Updates", "noreply@tax-updates.test"),
    ("Accounting Weekly", "newsletter@accountingweekly.test"),
    ("Office Supplies Co", "orders@officesupplies.test"),
    ("Cloud Ledger", "notifications@cloudledger.test"),
    ("Mia Fischer", "mia.fischer@freelance.test"),
]
_VOCABULARY = (
    "the a of to and in for on with as by at from this that we you your our please "
    "invoice payment tax return quarter receipt statement balance ledger payroll vat "
    "deadline account bank transfer expense report audit filing pension salary "
    "director dividend forecast budget approve attached find below regards thanks "
    "kind meeting call tomorrow monday friday week month year january march april "
    "question answer confirm update review sign document copy original draft final "
    "amount total due overdue reminder schedule client supplier contract lease rent "
    "insurance mileage allowance depreciation asset liability equity cash flow profit "
    "loss margin revenue cost sales purchase order delivery note credit debit refund "
    "Müller Zoë café €120 naïve résumé Łódź straße"
)
WORDS = _VOCABULARY.split()
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August"]


# --- the mailbox -------------------------------------------------------------------------


def _sentences(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(6, 18))
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
    return out


def _paragraphs(rng: random.Random, pool: list[str], size: int) -> list[str]:
    paragraphs: list[str] = []
    total = 0
    while total < size:
        paragraph = " ".join(rng.choices(pool, k=rng.randint(2, 6)))
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return paragraphs


def _wrap(text: str, width: int = 76) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return "\n".join(lines)


def _text_part(paragraphs: list[str]) -> str:
    body = "\n\n".join(_wrap(p) for p in paragraphs) + "\n\n-- \nSent from my desk\n"
    raw = body.encode()
    if body.isascii():
        return (
            'Content-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: 7bit\n\n'
            + body
        )
    return (
        'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n\n'
        + quopri.encodestring(raw).decode("ascii")
        + "\n"
    )


def _html_part(paragraphs: list[str], logo_cid: str | None) -> str:
    logo = f'<img src="cid:{logo_cid}" alt="logo" width="120">' if logo_cid else ""
    html = (
        '<html><head><meta charset="utf-8"><style>p{margin:0 0 1em 0}'
        'td{padding:2px 8px}</style></head>\n<body><div style="font-family:Arial,sans-serif;'
        'font-size:14px;color:#222">\n'
        + "\n".join(f"<p>{p}</p>" for p in paragraphs)
        + '\n<table style="border-top:1px solid #ccc"><tr><td>'
        + logo
        + "</td><td><b>Kind regards</b><br>Sent from my desk</td></tr></table>"
        + "\n</div></body></html>\n"
    )
    return (
        'Content-Type: text/html; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n\n'
        + quopri.encodestring(html.encode()).decode("ascii")
        + "\n"
    )


def _base64_lines(payload: bytes) -> str:
    return base64.encodebytes(payload).decode("ascii")


def _header(value: str) -> str:
    return value if value.isascii() else email.header.Header(value, "utf-8").encode()


def _address(name: str, address: str) -> str:
    return email.utils.formataddr((name, address), charset="utf-8")


@dataclass
class Mailbox:
    count: int
    bytes: int
    with_attachment: int
    with_client: int
    odd: int = 0


# One message in ODD_EVERY is built to be expensive to parse (with --odd, the default): the
# kinds below in turn. Each is what made parsing grow by hundreds of MB before the parser's
# bounds, or close to it.
ODD_EVERY = 250
ODD_KINDS = ("huge-header", "deep-nesting", "many-parts", "too-many-parts")


def odd_message(kind: str, n: int, *, sender: str, to: str, date: str) -> str:
    """One expensive message (LF line ends, like the rest of the mix)."""
    head = f"From: {sender}\nTo: {to}\nDate: {date}\nMessage-ID: <odd.{kind}.{n}@bench.test>\n"
    if kind == "huge-header":
        # 130,000+ characters of encoded words in the Subject and 4,500 addresses in Cc.
        words = " ".join("=?utf-8?q?caf=C3=A9?=" for _ in range(6500))
        cc = ", ".join(f"Person {k} <person{k}@list.test>" for k in range(4500))
        return f"{head}Subject: {words}\nCc: {cc}\nMIME-Version: 1.0\n\nHuge header.\n"
    if kind == "deep-nesting":
        body = "Content-Type: text/plain\n\ninnermost\n"
        for level in range(1500):
            body = (
                f'Content-Type: multipart/mixed; boundary="n{level}"\n\n'
                f"--n{level}\n{body}\n--n{level}--\n"
            )
        return f"{head}Subject: Deeply nested\nMIME-Version: 1.0\n{body}"
    parts = 3000 if kind == "many-parts" else 30000
    part = (
        "--p\nContent-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="part.bin"\n\nx\n'
    )
    return (
        f"{head}Subject: {parts} parts\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="p"\n\n{part * parts}--p--\n'
    )


def mailbox_fill(
    maildir: Path, count: int, *, seed: int, uid: int, gid: int, odd: bool = False
) -> Mailbox:
    """Write ``count`` messages into ``maildir`` (cur/, flags in the names, mtime = the
    delivery time, which Dovecot reports as INTERNALDATE) and hand them to the mail user;
    with ``odd``, one in ODD_EVERY is an expensive message (see odd_message)."""
    rng = random.Random(seed)
    pool = _sentences(rng, 3000)
    for sub in ("", "cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    now = time.time()
    # Oldest first, as delivered; all within the last 60 days (inside the 90-day window).
    times = sorted(now - rng.uniform(60, 60 * 86400) for _ in range(count))
    client_weights = [1 / (rank + 1) for rank in range(len(CLIENTS))]  # a few busy clients
    attachments: list[tuple[str, str, bytes]] = []  # earlier files, sometimes mailed again
    message_ids: list[str] = []
    total = with_attachment = with_client = odd_count = 0
    pid = os.getpid()
    for n, when in enumerate(times):
        roll = rng.random()
        client = rng.choices(CLIENTS, weights=client_weights)[0]
        client_addr = client[2] if rng.random() < 0.85 else client[2].upper()
        other = rng.choice(OTHERS)
        cc = ""
        if roll < 0.55:  # a client writes to the member
            sender = _address(client[1], client_addr)
            to = _address(*MEMBER)
            with_client += 1
        elif roll < 0.70:  # the member's own message to a client (Bcc to self)
            sender = _address(*MEMBER)
            to = _address(client[1], client_addr)
            cc = _address(*OTHERS[1]) if rng.random() < 0.3 else ""
            with_client += 1
        elif roll < 0.75:  # a colleague with the client in Cc
            sender = _address(*OTHERS[1])
            to = _address(*MEMBER)
            cc = _address(client[1], client_addr)
            with_client += 1
        else:  # newsletters, suppliers, colleagues: nothing to link
            sender = _address(*other)
            to = _address(*MEMBER)
        sender_addr = email.utils.parseaddr(sender)[1]
        domain = sender_addr.rpartition("@")[2].lower()
        date = email.utils.formatdate(when, localtime=False)
        message_id = f"{rng.getrandbits(64):016x}.{n}@mail.{domain}"
        subject = rng.choice(
            [
                "Q{q} VAT return",
                "Invoice {k} from Müller Haus",
                "Payroll for {m}",
                "Bank statements {m}",
                "Question about expenses",
                "Receipts for {m} \u2013 café and travel",
                "Year-end accounts: next steps",
                "Your newsletter for {m}",
                "Order {k} confirmed",
            ]
        ).format(q=rng.randint(1, 4), k=rng.randint(1000, 9999), m=rng.choice(MONTHS))
        reply = bool(message_ids) and rng.random() < 0.3
        thread = []
        if reply:
            parent = rng.choice(message_ids[-200:])
            subject = "Re: " + subject
            thread = [f"In-Reply-To: <{parent}>", f"References: <{parent}>"]
        message_ids.append(message_id)

        target = int(2048 * (25 ** rng.random()))  # 2-50 KB, log-uniform
        kind = rng.random()
        attach = rng.random() < 0.10
        boundary = f"----=_Part_{n}_{rng.getrandbits(32)}"
        logo_cid = f"logo{n}@{domain}" if kind >= 0.4 and rng.random() < 0.1 else None
        if kind < 0.4:  # plain text only
            body = _text_part(_paragraphs(rng, pool, target - 1500))
        else:
            paragraphs = _paragraphs(rng, pool, max(300, int((target - 2000) / 2.3)))
            html = _html_part(paragraphs, logo_cid)
            if kind < 0.85:  # text + HTML alternatives
                inner = f"alt_{boundary}"
                body = (
                    f'Content-Type: multipart/alternative; boundary="{inner}"\n\n'
                    f"--{inner}\n{_text_part(paragraphs)}\n--{inner}\n{html}\n--{inner}--\n"
                )
            else:  # HTML only
                body = html
            if logo_cid:  # a signature logo: an inline image the portal skips by policy
                inner = f"rel_{boundary}"
                logo = _base64_lines(rng.randbytes(rng.randint(3000, 8000)))
                body = (
                    f'Content-Type: multipart/related; boundary="{inner}"\n\n'
                    f"--{inner}\n{body}\n--{inner}\nContent-Type: image/png\n"
                    f"Content-ID: <{logo_cid}>\nContent-Disposition: inline\n"
                    f"Content-Transfer-Encoding: base64\n\n{logo}\n--{inner}--\n"
                )
        if attach:
            with_attachment += 1
            if attachments and rng.random() < 0.15:
                filename, content_type, payload = rng.choice(attachments)
            else:
                filename, content_type = rng.choice(
                    [
                        (f"Invoice-{rng.randint(1000, 9999)}.pdf", "application/pdf"),
                        (f"bank_statement_{rng.choice(MONTHS)}.pdf", "application/pdf"),
                        (f"receipt_{n}.jpg", "image/jpeg"),
                        (
                            "payroll.xlsx",
                            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        ),
                    ]
                )
                payload = rng.randbytes(int(50 * 1024 * (10 ** rng.random())))  # 50-500 KB
                attachments.append((filename, content_type, payload))
            body = (
                f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
                f"This is a multi-part message in MIME format.\n\n--{boundary}\n{body}\n"
                f'--{boundary}\nContent-Type: {content_type}; name="{filename}"\n'
                f'Content-Disposition: attachment; filename="{filename}"\n'
                f"Content-Transfer-Encoding: base64\n\n{_base64_lines(payload)}\n--{boundary}--\n"
            )
        received = email.utils.formatdate(when + rng.uniform(1, 30), localtime=False)
        signature = base64.b64encode(rng.randbytes(256)).decode()
        headers = [
            f"Return-Path: <{sender_addr}>",
            f"Delivered-To: {MEMBER[1]}",
            f"Received: from mail.{domain} (mail.{domain} [198.51.100.{n % 250 + 1}])\n"
            f"\tby mx.alder.test (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\n"
            f"\tfor <{MEMBER[1]}>; {received}",
            f"Received: from [192.168.1.{n % 200 + 2}] by mail.{domain} with ESMTPSA; {date}",
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s1;\n"
            f"\th=from:to:subject:date:message-id; bh={signature[:44]};\n"
            f"\tb={signature[44:120]}\n\t {signature[120:]}",
            f"From: {sender}",
            f"To: {to}",
            *([f"Cc: {cc}"] if cc else []),
            f"Subject: {_header(subject)}",
            f"Date: {date}",
            f"Message-ID: <{message_id}>",
            *thread,
            "MIME-Version: 1.0",
            rng.choice(["X-Mailer: Microsoft Outlook 16.0", "User-Agent: Thunderbird/115.8"]),
        ]
        data = ("\n".join(headers) + "\n" + body).encode()
        if odd and n % ODD_EVERY == ODD_EVERY // 2:
            kind = ODD_KINDS[odd_count % len(ODD_KINDS)]
            data = odd_message(kind, n, sender=sender, to=to, date=date).encode()
            odd_count += 1
        total += len(data)
        seen = "S" if rng.random() < 0.7 else ""
        lines = data.count(b"\n")
        # S= is the file size, W= the size with CRLF line ends (RFC822.SIZE): Dovecot reads
        # both from the name instead of opening the file.
        name = f"{int(when)}.M{n}P{pid}.bench,S={len(data)},W={len(data) + lines}:2,{seen}"
        path = maildir / "cur" / name
        path.write_bytes(data)
        os.utime(path, (when + 30, when + 30))
        os.chown(path, uid, gid)
    for sub in ("", "cur", "new", "tmp"):
        os.chown(maildir / sub, uid, gid)
    return Mailbox(count, total, with_attachment, with_client, odd_count)


# --- the database ------------------------------------------------------------------------


def database_prepare(url: str) -> None:
    """Create the database named by ``url`` if it does not exist yet (never drop it)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"DATABASE_URL must be PostgreSQL, not {parts.scheme!r}")
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres", query=""))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def _schema_sql(url: str, statement: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    plain = urlunsplit(parts._replace(scheme="postgresql", query=""))
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(schema)))


def schema_url(url: str, schema: str) -> str:
    """``url`` with the schema as search_path (dj-database-url's currentSchema option)."""
    parts = urlsplit(url)
    query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("currentSchema="))
    query = f"{query}&currentSchema={schema}" if query else f"currentSchema={schema}"
    return urlunsplit(parts._replace(query=query))


# --- the child processes (Django lives only there) ---------------------------------------


_SQL_TABLE = re.compile(r'(?:INSERT INTO|UPDATE|FROM) "(\w+)"')


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _children_hwm_kb(peaks: dict[int, int], stop) -> None:  # type: ignore[no-untyped-def]
    """Until ``stop`` is set: the peak RSS (VmHWM) of each child process of this one (the
    engine's parse process), sampled every 50 ms while it lives. Its own VmHWM counts from
    its exec, so nothing of this process's image is in it."""
    pid = os.getpid()
    while not stop.wait(0.05):
        children: set[int] = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children.update(int(c) for c in (task / "children").read_text().split())
        for child in children:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[child] = max(peaks.get(child, 0), int(line.split()[1]))


def child_setup(args: argparse.Namespace) -> dict:
    """Migrate the empty schema; create the firm, its clients and the member's mailbox."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from accounts.models import User
    from mailsync import services
    from portal.models import Client, Contact, ContactAddress, Firm

    firm = Firm.objects.create(name="Alder & Birch Accounting", slug="alder-birch")
    member = User.objects.create_user(email=MEMBER[1], password=None)
    for client_name, contact_name, address in CLIENTS:
        client = Client.objects.create(firm=firm, display_name=client_name)
        contact = Contact.objects.create(client=client, name=contact_name)
        ContactAddress.objects.create(
            firm=firm, contact=contact, address=address, normalized=address.lower(), is_primary=True
        )
    connection = services.connection_create(
        firm=firm,
        owner=member,
        kind="imap",
        email_address=MEMBER[1],
        host="127.0.0.1",
        port=args.port,
        security="none",
        username=args.user,
        password=args.password,
    )
    return {"connection": connection.pk}


def child_sync(args: argparse.Namespace) -> dict:
    """Initial sync, then the same mailbox again unchanged; RSS from /proc/self."""
    import gc

    import django

    django.setup()
    from django.db import connection as db

    from mailsync import engine
    from mailsync.engine import mailbox_sync
    from mailsync.models import MailboxConnection, Message, MessageClientLink
    from portal.models import Document

    mailbox = MailboxConnection.objects.get(pk=args.connection)
    db.ensure_connection()
    # Where the time goes: SQL through Django's execute wrapper (by statement and table),
    # time inside the IMAP adapter's fetch from outside the engine, and the engine's own
    # timings (report.timings: fetching, waiting for parsed batches, parse CPU in whichever
    # process parsed, storing and committing).
    spent = {"sql": 0.0, "statements": 0, "imap": 0.0}
    by_statement: dict[str, list[float]] = {}  # "INSERT mailsync_message" -> [count, seconds]

    def timed_sql(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - start
            spent["sql"] += elapsed
            spent["statements"] += 1
            table = _SQL_TABLE.search(sql)
            key = sql.split(None, 1)[0].upper() + (f" {table.group(1)}" if table else "")
            entry = by_statement.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += elapsed

    real_fetch = engine.ImapMailbox.fetch

    def timed_fetch(self, *a, **kw):  # type: ignore[no-untyped-def]
        messages = real_fetch(self, *a, **kw)
        while True:  # only the time inside the adapter's generator counts
            start = time.perf_counter()
            try:
                message = next(messages)
            except StopIteration:
                return
            finally:
                spent["imap"] += time.perf_counter() - start
            yield message

    engine.ImapMailbox.fetch = timed_fetch

    # The message rows go in by COPY on PostgreSQL, which is not an execute() and so not
    # seen by the wrapper above: time the whole of _copy_messages (its id SELECT, timed
    # above too, is subtracted) as one "COPY mailsync_message" statement.
    real_copy = getattr(engine, "_copy_messages", None)

    def timed_copy(messages):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        sql_before = spent["sql"]
        try:
            return real_copy(messages)
        finally:
            elapsed = time.perf_counter() - start - (spent["sql"] - sql_before)
            spent["sql"] += elapsed
            spent["statements"] += 1
            entry = by_statement.setdefault("COPY mailsync_message", [0, 0.0])
            entry[0] += 1
            entry[1] += elapsed

    if real_copy is not None:
        engine._copy_messages = timed_copy
    gc.collect()
    rss_before = _status_kb("VmRSS")
    try:  # reset VmHWM, so the peak is the sync's, not Django's set-up
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    child_peaks: dict[int, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_children_hwm_kb, args=(child_peaks, stop), daemon=True)
    sampler.start()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with db.execute_wrapper(timed_sql):
        report = mailbox_sync(mailbox)
    initial = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    stop.set()
    sampler.join()
    peak_kb = _status_kb("VmHWM")
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime
    # The parse process has ended (and been waited for) when mailbox_sync returns.
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_parse_process = (
        used.ru_utime - cpu_children.ru_utime + used.ru_stime - cpu_children.ru_stime
    )
    initial_spent = dict(spent)
    start = time.perf_counter()
    again = mailbox_sync(mailbox)
    incremental = time.perf_counter() - start
    if profiler is not None:
        import pstats

        for order in ("tottime", "cumulative"):
            top = int(os.environ.get("BENCH_PROFILE_TOP", "15"))
            print(f"\n--- cProfile of the sync process, initial sync, top {top} by {order} ---")
            pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(top)
    return {
        "initial": initial,
        "incremental": incremental,
        "rss_before_mb": rss_before / 1024,
        "peak_mb": peak_kb / 1024,
        "peak_is_sync_only": hwm_reset,
        "cpu": cpu_seconds,
        "cpu_parse_process": cpu_parse_process,
        "parse_process_peak_mb": max(child_peaks.values(), default=0) / 1024,
        "spent": initial_spent,
        "timings": report.timings,
        "by_statement": sorted(by_statement.items(), key=lambda item: -item[1][1]),
        "report": report.as_dict(),
        "problems": report.problems,
        "again": again.as_dict(),
        "messages": Message.objects.count(),
        "links": MessageClientLink.objects.count(),
        "documents": Document.objects.count(),
    }


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["setup", "sync"])
    parser.add_argument("--result", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--connection", type=int)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    result = child_setup(args) if args.role == "setup" else child_sync(args)
    Path(args.result).write_text(json.dumps(result))


def run_child(env: dict[str, str], role: str, *extra: str, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result = Path(handle.name)
    try:
        subprocess.run(
            [benchkit.PYTHON, __file__, "--child", role, "--result", str(result), *extra],
            env={**os.environ, **env},
            check=True,
            timeout=timeout,
        )
        return json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)


# --- mbsync --------------------------------------------------------------------------------

MBSYNC_RC = """\
IMAPAccount test
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path {path}/
Inbox {path}/INBOX
SubFolders Verbatim

Channel pull
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
"""


def mbsync_run(
    run: Path, *, port: int, user: str, password: str, timeout: float
) -> tuple[float, int]:
    """Pull INBOX into an empty Maildir with the SERVICES.md recipe: (wall seconds,
    messages pulled)."""
    target = run / "mbsync"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    rc = run / "mbsyncrc"
    rc.write_text(MBSYNC_RC.format(port=port, user=user, password=password, path=target))
    rc.chmod(0o600)
    start = time.perf_counter()
    done = subprocess.run(
        ["mbsync", "-c", str(rc), "-q", "-a"], capture_output=True, text=True, timeout=timeout
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mbsync failed ({done.returncode}): {done.stderr.strip()}")
    pulled = sum(1 for sub in ("cur", "new") for _ in (target / "INBOX" / sub).iterdir())
    shutil.rmtree(target, ignore_errors=True)
    return elapsed, pulled


# --- the run -------------------------------------------------------------------------------


def bench_size(
    n: int,
    *,
    server,  # type: ignore[no-untyped-def]
    run: Path,
    database_url: str,
    args: argparse.Namespace,
    profile: bool,
) -> dict:
    from cryptography.fernet import Fernet

    user, password = f"bench{n}", f"pw-bench-{n}"
    server.add_user(user, password)
    maildir = server.mail_root / user / "Maildir"
    start = time.perf_counter()
    box = mailbox_fill(
        maildir, n, seed=args.seed, uid=server.mail_uid, gid=server.mail_gid, odd=args.odd
    )
    print(
        f"N={n}: wrote {box.count} messages, {box.bytes / 2**20:.0f} MiB "
        f"(avg {box.bytes / box.count / 1024:.1f} KiB; {box.with_attachment} with an attachment, "
        f"{box.with_client} with a client, {box.odd} expensive: {', '.join(ODD_KINDS)}) "
        f"in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    # Let Dovecot index the folder and cache the metadata before anything is timed, so
    # neither contender pays for the first scan of a Maildir that was written behind its back.
    start = time.perf_counter()
    server.doveadm("fetch", "-u", user, "uid size.virtual date.received flags", "mailbox", "INBOX")
    count = server.message_count(user)
    print(f"N={n}: Dovecot indexed {count} messages in {time.perf_counter() - start:.1f}s")

    def mbsync_once() -> float:
        elapsed, pulled = mbsync_run(
            run, port=server.imap_port, user=user, password=password, timeout=args.max_seconds
        )
        if pulled != n:
            print(f"WARNING: mbsync pulled {pulled} of {n} messages")
        return elapsed

    # mbsync once before the portal and the rest after it, so neither always goes first.
    timings = [mbsync_once()]
    results: dict = {"n": n, "mailbox_mib": box.bytes / 2**20}
    runs = [("measure", False)] + ([("profile", True)] if profile else [])
    for label, with_profile in runs:
        schema = f"mailsync_bench_{os.getpid()}_{n}_{label}"
        _schema_sql(database_url, "CREATE SCHEMA {}", schema)
        var_dir = run / f"var-{n}-{label}"
        var_dir.mkdir()
        env = benchkit.portal_env(
            database_url=schema_url(database_url, schema),
            var_dir=var_dir,
            MAILSYNC_FERNET_KEYS=Fernet.generate_key().decode(),
            MEDIA_ROOT=str(var_dir / "media"),
        )
        try:
            start = time.perf_counter()
            setup = run_child(
                env,
                "setup",
                f"--port={server.imap_port}",
                f"--user={user}",
                f"--password={password}",
                timeout=300,
            )
            print(
                f"N={n}: schema {schema} migrated, firm created in "
                f"{time.perf_counter() - start:.1f}s",
                flush=True,
            )
            extra = ["--profile"] if with_profile else []
            synced = run_child(
                env,
                "sync",
                f"--connection={setup['connection']}",
                *extra,
                timeout=args.max_seconds,
            )
        finally:
            if not args.keep:
                _schema_sql(database_url, "DROP SCHEMA IF EXISTS {} CASCADE", schema)
                shutil.rmtree(var_dir, ignore_errors=True)
        if with_profile:
            print(f"N={n}: profiled sync took {synced['initial']:.1f}s (not in the table)")
            continue
        report = synced["report"]
        print(
            f"N={n}: portal {synced['initial']:.1f}s; fetched {report['fetched']}, "
            f"new {report['new']}, linked {report['linked']}, documents {report['documents']}, "
            f"kept raw {report['kept_raw']}, errors {report['errors']}, state {report['state']}"
            + (f"; problems: {synced['problems']}" if synced["problems"] else ""),
            flush=True,
        )
        spent = synced["spent"]
        engine_times = synced["timings"]
        other = synced["initial"] - sum(
            engine_times.get(key, 0.0) for key in ("fetch", "parse_wait", "store")
        )
        print(
            f"N={n}: of the {synced['initial']:.1f}s wall time: fetching "
            f"{engine_times.get('fetch', 0):.1f}s (inside the IMAP adapter {spent['imap']:.1f}s), "
            f"waiting for parsed batches {engine_times.get('parse_wait', 0):.1f}s, storing and "
            f"committing {engine_times.get('store', 0):.1f}s (SQL {spent['sql']:.1f}s in "
            f"{spent['statements']} statements, {spent['statements'] / n:.2f} per message), "
            f"the rest (folders, STATUS, SEARCH, set-up) {other:.1f}s",
            flush=True,
        )
        print(
            f"N={n}: CPU: sync process {synced['cpu']:.1f}s, parse process "
            f"{synced['cpu_parse_process']:.1f}s; parsing itself "
            f"{engine_times.get('parse_cpu', 0):.1f}s CPU. RSS: {synced['rss_before_mb']:.0f} MB "
            f"before, peak {synced['peak_mb']:.0f} MB "
            f"(parse process peak {synced['parse_process_peak_mb']:.0f} MB); incremental "
            f"{synced['incremental']:.2f}s",
            flush=True,
        )
        print(
            f"N={n}: SQL by statement (count, seconds): "
            + "; ".join(f"{key} {c:.0f} {t:.1f}s" for key, (c, t) in synced["by_statement"][:8]),
            flush=True,
        )
        if report["new"] != n:
            print(f"WARNING: the portal imported {report['new']} of {n} messages")
        results.update(synced)

    timings += [mbsync_once() for _ in range(args.mbsync_runs - 1)]
    print(f"N={n}: mbsync runs {', '.join(f'{t:.2f}s' for t in timings)}", flush=True)
    results["mbsync"] = min(timings)
    shutil.rmtree(server.mail_root / user, ignore_errors=True)
    return results


def table(rows: list[dict]) -> None:
    header = (
        f"{'N':>6} {'portal s':>9} {'msgs/s':>7} {'peak RSS MB':>11} {'RSS before':>10} "
        f"{'incr. s':>7} {'mbsync s':>8} {'ratio':>6}"
    )
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['n']:>6} {row['initial']:>9.1f} {row['n'] / row['initial']:>7.0f} "
            f"{row['peak_mb']:>11.0f} {row['rss_before_mb']:>10.0f} {row['incremental']:>7.2f} "
            f"{row['mbsync']:>8.2f} {row['initial'] / row['mbsync']:>5.1f}x"
        )
    print(
        "\nportal s: mailbox_sync wall time (Django set-up not included); peak RSS: the sync "
        "child's VmHWM during the initial sync; RSS before: after django.setup(); ratio: "
        "portal / mbsync (aim <= 2x); aim for incr. s: < 1 s."
    )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000", help="mailbox sizes, comma-separated")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile an extra sync of the largest size"
    )
    parser.add_argument("--keep", action="store_true", help="keep the schemas and media")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--odd",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"one message in {ODD_EVERY} built to be expensive to parse (default: on)",
    )
    parser.add_argument(
        "--mbsync-runs",
        type=int,
        default=2,
        choices=range(1, 10),
        help="mbsync runs per size (the fastest counts)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=900, help="time limit for each sync child and mbsync"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]

    from tests.servers.dovecot import DovecotServer

    if not DovecotServer.available():
        raise SystemExit("dovecot is missing: apt-get install dovecot-imapd dovecot-pop3d")
    if shutil.which("mbsync") is None:
        raise SystemExit("mbsync is missing: apt-get install isync")
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    database_prepare(database_url)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (other work on the machine skews figures)")
    print(
        f"database {urlsplit(database_url).path.lstrip('/')} on "
        f"{urlsplit(database_url).hostname}; sizes {sizes}; "
        f"MAILSYNC_BATCH_SIZE={os.environ.get('MAILSYNC_BATCH_SIZE', '150 (default)')}"
    )
    # Dovecot's mail processes run as another user: they must be able to enter the folder.
    run = Path(tempfile.mkdtemp(prefix="portal-bench-mailsync-"))
    run.chmod(0o755)
    server = DovecotServer(run / "dovecot")
    rows = []
    started = time.perf_counter()
    try:
        server.start()
        for n in sizes:
            rows.append(
                bench_size(
                    n,
                    server=server,
                    run=run,
                    database_url=database_url,
                    args=args,
                    profile=args.profile and n == max(sizes),
                )
            )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)
    table(rows)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"whole run: {time.perf_counter() - started:.0f}s; load average at the end: {load}")


if __name__ == "__main__":
    main()
