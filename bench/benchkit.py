"""Shared set-up for the Django benches: a throwaway database, settings from the environment,
bulk test data, a loopback SMTP sink and free ports. Not a bench itself.

Everything here talks only to 127.0.0.1 (or to the PostgreSQL server DATABASE_URL names).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
PYTHON = sys.executable
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Addresses under .test are refused as special-use unless allowed, as in the test settings.
CLIENT_DOMAIN = "client.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def portal_env(
    *, database_url: str, var_dir: Path, broker_url: str = "filesystem://", **extra: str
) -> dict[str, str]:
    """Environment for portal.settings: production mode (DEBUG off), nothing leaves loopback.

    Assigned, not defaulted: a developer's shell may point EMAIL_BACKEND at an ESP or the
    broker at a shared Redis, and a bench must never send there.
    """
    env = {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        # DEBUG off: with DEBUG on Django keeps every SQL query in memory, which slows a
        # long run and is not how the portal runs in production.
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-" + uuid.uuid4().hex,
        "SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback; no TLS proxy in front
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "PORTAL_VAR_DIR": str(var_dir),
        # Redis db 15 (flushed by the bench), or folders under PORTAL_VAR_DIR, thrown away.
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "ADDRESS_ALLOWED_SPECIAL_DOMAINS": "test",
        "ADDRESS_CHECK_DELIVERABILITY": "0",  # no DNS look-ups
        "SITE_URL": "http://127.0.0.1:8000",
        "DEFAULT_FROM_EMAIL": "Practice Portal <no-reply@portal.test>",
        "LOG_LEVEL": "WARNING",
        "EMAIL_BACKEND": "portal.mail_outbox.OutboxBackend",
        # The bench's Dovecot and SMTP sink listen on loopback.
        "OUTBOUND_ALLOW_PRIVATE_HOSTS": "1",
    }
    env.update(extra)
    return env


# Production and CI run PostgreSQL, and production's broker is Redis: the benches measure
# those by default. SQLite and the filesystem broker remain as options for a machine without
# the servers, and their figures say little about production.
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/portal"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@contextlib.contextmanager
def throwaway_database(var_dir: Path, kind: str = "postgres") -> Iterator[str]:
    """A database URL that lives only for this run.

    ``kind="postgres"``: a new database beside $DATABASE_URL's (when that is PostgreSQL) or
    beside DEFAULT_POSTGRES_URL's, created here and dropped afterwards (the named one is
    never written to). ``kind="sqlite"``: an SQLite file in the run's temporary folder.
    """
    given = os.environ.get("DATABASE_URL", "")
    if kind == "sqlite":
        yield f"sqlite:///{var_dir / 'bench.sqlite3'}"
        return
    if not given.startswith("postgres"):
        given = DEFAULT_POSTGRES_URL
    parts = urlsplit(given)
    import psycopg
    from psycopg import sql

    base = parts.path.lstrip("/") or "portal"
    name = f"{base}_bench_{os.getpid()}"
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    print(f"throwaway PostgreSQL database {name}")
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def throwaway_redis(url: str = DEFAULT_REDIS_URL) -> Iterator[str]:
    """The bench's Redis database, emptied before and after: it must be one nobody uses."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("the bench only talks to a Redis on loopback")
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def django_start(env: dict[str, str]) -> None:
    """Apply `env`, set Django up and migrate the (empty) database."""
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def create_firm_with_clients(count: int, *, prefix: str = "client", firm=None):  # type: ignore[no-untyped-def]
    """A firm and `count` clients, each with one contact and one invoice address.

    bulk_create: the set-up is not what is measured, and 10,000 single inserts would take
    longer than the bench.
    """
    from portal.models import Client, Contact, ContactAddress, Firm

    firm = firm or Firm.objects.create(
        name="Alder & Birch Accounting",
        slug=f"bench-{uuid.uuid4().hex[:8]}",
        sender_name="Alder & Birch",
        reply_to_email="billing@alder.test",
    )
    clients = Client.objects.bulk_create(
        Client(firm=firm, display_name=f"{prefix} {n:05d} Ltd") for n in range(count)
    )
    contacts = Contact.objects.bulk_create(
        Contact(client=client, name=f"Contact of {prefix} {n:05d}")
        for n, client in enumerate(clients)
    )
    ContactAddress.objects.bulk_create(
        ContactAddress(
            firm=firm,
            contact=contact,
            address=f"{prefix}{n:05d}@{CLIENT_DOMAIN}",
            normalized=f"{prefix}{n:05d}@{CLIENT_DOMAIN}",
            is_primary=True,
        )
        for n, contact in enumerate(contacts)
    )
    return firm, clients


class SMTPSink:
    """aiosmtpd in a child process that accepts every message and only counts them.

    A child process, not a thread: a server thread would share the GIL with the code being
    timed, and a real MTA is another process anyway.
    """

    def __init__(self, *, pipelining: bool = False) -> None:
        # pipelining: advertise PIPELINING in the EHLO reply, as Postfix and Exim do.
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                PYTHON,
                str(BENCH_DIR / "benchkit.py"),
                "smtp-sink",
                str(self.port),
                str(int(pipelining)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()  # the child says "ready" once it listens
        if line != "ready":
            self.process.kill()
            raise SystemExit(f"SMTP sink did not start: {line!r}")

    def received(self) -> int:
        """How many messages the server accepted so far."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the child exits when its stdin closes
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _serve_smtp(port: int, pipelining: bool) -> None:
    """The sink's child process: count accepted messages, answer "count" on stdin."""
    from aiosmtpd.controller import Controller

    class Counter:
        count = 0

        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
            session.host_name = hostname
            if pipelining:
                return [*responses[:-1], "250-PIPELINING", responses[-1]]
            return responses

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            Counter.count += 1
            return "250 2.0.0 Message accepted for delivery"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "count":
                print(Counter.count, flush=True)
    finally:
        controller.stop()


def wait_until(check, *, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out after {seconds:.0f}s waiting for {what}")


if __name__ == "__main__" and sys.argv[1:2] == ["smtp-sink"]:
    _serve_smtp(int(sys.argv[2]), sys.argv[3:4] == ["1"])
