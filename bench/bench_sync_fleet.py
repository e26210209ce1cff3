"""Many mailboxes synced by a fleet of Celery workers on Redis, with and without a webhook flood.

Set-up (all on loopback): a throwaway Dovecot (tests/servers/dovecot.py) with ``--mailboxes``
users of ``--messages`` messages each (bench_mailsync's realistic mail), a redis-server of
its own on a free port, a throwaway PostgreSQL database, one firm with a mailbox connection
per user. Workers, as production runs them (see the README, "Running on several machines"):

- ``sync``: one Celery worker with ``--sync-processes`` (4) prefork processes, ``-Q sync``;
- ``default``: one process (the real dispatcher task ``mailsync.dispatch_due`` runs here);
- ``webhooks``: one process.

The bench plays beat: it sends ``mailsync.dispatch_due`` every ``--dispatch-every`` seconds.
``MAILSYNC_POLL_SECONDS`` is ``--poll`` so each mailbox comes due several times per phase.

Three phases of ``--seconds`` each, every mailbox starting from an empty database:
``quiet``, then ``flood``, where a thread stores ESP tracking events (Postmark "delivered"
events for messages nobody sent, as an unknown ESP message would be) and queues one
``invoicing.process_webhook_event`` task per event on the webhooks queue, ``--flood-rate``
per second, and ``one-queue``, the control: the same flood sent to the sync queue, as if all
work shared one queue. Printed per phase: mailboxes/minute (first syncs of all mailboxes,
and all syncs), the slowest mailbox's lag (from due to its sync starting; a mailbox still
waiting at the end counts until the end), overlapping syncs of one mailbox (must be 0),
starved mailboxes (passed over: another mailbox synced twice while it waited; must be 0),
mailboxes not reached within the phase (the fleet's capacity), and the webhook flood
(events, tasks run, the queue's peak backlog).

Benchmarks never run in the test suite. Every connection goes to 127.0.0.1; each phase is
bounded in time and the flood in count.

    .venv/bin/python bench/bench_sync_fleet.py [--mailboxes 200] [--messages 10] [--seconds 150]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchkit import (
    PYTHON,
    REPO_ROOT,
    django_start,
    free_port,
    portal_env,
    temp_dir,
    throwaway_database,
)

BENCH_DIR = Path(__file__).resolve().parent


def redis_start(port: int, directory: Path) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


def mailboxes_create(server, count: int, messages: int, firm) -> list[int]:  # type: ignore[no-untyped-def]
    from bench_mailsync import mailbox_fill

    from mailsync import services

    ids = []
    for n in range(count):
        name = f"fleet{n:04d}"
        password = f"pw-{name}"
        server.add_user(name, password)
        mailbox_fill(
            server.mail_root / name / "Maildir",
            messages,
            seed=n,
            uid=server.mail_uid,
            gid=server.mail_gid,
        )
        connection = services.connection_create(
            firm=firm,
            owner=None if n == 0 else _member(firm, n),
            kind="imap",
            email_address=f"{name}@firm.test",
            host=server.host,
            port=server.imap_port,
            security="none",
            username=name,
            password=password,
        )
        ids.append(connection.pk)
    return ids


def _member(firm, n: int):  # type: ignore[no-untyped-def]
    from accounts.models import Membership, Role, User

    user = User.objects.create_user(email=f"member{n:04d}@firm.test", password=None)
    Membership.objects.create(firm=firm, user=user, role=Role.STAFF)
    return user


def workers_start(env: dict[str, str], log_dir: Path, sync_processes: int) -> list:
    worker_env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(REPO_ROOT)]),
        "FLEET_LOG_DIR": str(log_dir),
    }
    specs = [("sync", sync_processes), ("default", 1), ("webhooks", 1)]
    processes = []
    for queue, concurrency in specs:
        processes.append(
            subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "fleet_worker",
                    "worker",
                    "-Q",
                    queue,
                    "-c",
                    str(concurrency),
                    "-n",
                    f"{queue}@fleet-bench",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=REPO_ROOT,
                env=worker_env,
                stdout=open(log_dir / f"worker-{queue}.log", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def workers_stop(processes: list) -> None:
    for process in processes:
        process.terminate()  # warm shutdown: the task in progress finishes
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _flood(
    stop: threading.Event, rate: int, max_events: int, sent: list[int], queue: str | None
) -> None:
    import datetime
    import uuid

    from anymail.signals import AnymailTrackingEvent
    from django.db import connections

    from invoicing.delivery.models import WebhookEvent
    from invoicing.delivery.tasks import webhook_event_process_task
    from invoicing.delivery.webhooks import stable_event_id, tracking_event_payload

    try:
        batch = max(rate // 10, 1)
        while not stop.is_set() and sent[0] < max_events:
            started = time.monotonic()
            events = []
            for _ in range(batch):
                event = AnymailTrackingEvent(
                    event_type="delivered",
                    timestamp=datetime.datetime.now(datetime.UTC),
                    message_id=str(uuid.uuid4()),
                    event_id=str(uuid.uuid4()),
                    recipient="someone@client.test",
                    esp_event={},
                )
                payload = tracking_event_payload(event)
                events.append(
                    WebhookEvent(
                        esp="postmark",
                        event_id=stable_event_id("postmark", payload),
                        payload=payload,
                    )
                )
            for stored in WebhookEvent.objects.bulk_create(events):
                # queue None: the task's route (webhooks); "sync": the control phase, as if
                # every task shared one queue.
                webhook_event_process_task.apply_async(args=[stored.pk], queue=queue)
            sent[0] += len(events)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    finally:
        connections.close_all()


def _records(log_dir: Path) -> list[dict]:
    records = []
    for path in log_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def phase_run(
    name: str, args: argparse.Namespace, ids: list[int], log_dir: Path, redis_url: str
) -> dict:
    import redis
    from django.db import connections

    from invoicing.delivery.models import WebhookEvent
    from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageSource
    from mailsync.tasks import dispatch_due

    # Let the previous phase's syncs end (queued ones are dropped) before starting over.
    broker = redis.Redis.from_url(redis_url)
    broker.delete("sync", "default", "webhooks")
    settle = time.monotonic() + 120
    while MailboxConnection.objects.exclude(lease_token="").exists() and time.monotonic() < settle:
        time.sleep(0.5)
    # Every mailbox starts from nothing: its first sync reads all its messages again.
    Message.objects.all().delete()
    MessageSource.objects.all().delete()
    MailboxFolder.objects.all().delete()
    MailboxConnection.objects.update(
        next_attempt_at=None, lease_token="", lease_until=None, messages_imported=0
    )
    WebhookEvent.objects.all().delete()
    for path in log_dir.glob("*.jsonl"):
        path.unlink()
    broker.delete("sync", "default", "webhooks")
    connections.close_all()

    stop = threading.Event()
    sent = [0]
    flood = None
    t0 = time.time()
    if name in ("flood", "one-queue"):
        queue = "sync" if name == "one-queue" else None
        flood = threading.Thread(
            target=_flood,
            args=(stop, args.flood_rate, args.flood_max, sent, queue),
            daemon=True,
        )
        flood.start()
    deadline = time.monotonic() + args.seconds
    backlog_peak = 0
    while time.monotonic() < deadline:
        dispatch_due.delay()
        # The flood's queue: webhooks, or sync in the control (where the dispatcher's own
        # sync tasks are counted too).
        backlog_peak = max(backlog_peak, broker.llen("sync" if name == "one-queue" else "webhooks"))
        time.sleep(min(args.dispatch_every, max(0.0, deadline - time.monotonic())))
    t_end = time.time()
    stop.set()
    if flood is not None:
        flood.join()
    backlog_end = broker.llen("webhooks") + (broker.llen("sync") if name == "one-queue" else 0)
    # One task per event: what left the queue was run (most such events then wait for
    # their delivery, as unknown ESP messages do, so processed_at says little here).
    # (In the control the sync queue also holds the dispatcher's tasks: not counted.)
    processed = sent[0] - backlog_end if name != "one-queue" else -1
    connections.close_all()
    time.sleep(1.0)  # syncs that started before the end write their record as they finish
    records = [r for r in _records(log_dir) if r["start"] <= t_end]
    return summarise(name, ids, records, t0, t_end, args) | {
        "flood_events": sent[0],
        "flood_processed": processed,
        "webhooks_backlog_peak": backlog_peak,
        "webhooks_backlog_end": backlog_end,
    }


def _passed_over(pk: int, syncs: list[dict], records: list[dict], t0: float, t_end: float) -> bool:
    """Whether, while this mailbox waited (due, not yet syncing), another mailbox was synced
    twice: the fleet served someone again before it. That is starvation; a long wait while
    every other mailbox also waits its turn is only the fleet's capacity."""
    due = t0
    waits = []
    for sync in syncs:
        waits.append((due, sync["start"]))
        due = sync["next"] if sync["next"] is not None else float("inf")
    if due < t_end:
        waits.append((due, t_end))
    for begin, end in waits:
        starts: dict[int, int] = {}
        for other in records:
            if other["id"] != pk and begin <= other["start"] < end:
                starts[other["id"]] = starts.get(other["id"], 0) + 1
                if starts[other["id"]] >= 2:
                    return True
    return False


def summarise(
    name: str, ids: list[int], records: list[dict], t0: float, t_end: float, args
) -> dict:  # type: ignore[no-untyped-def]
    by_box: dict[int, list[dict]] = {pk: [] for pk in ids}
    for record in records:
        by_box.setdefault(record["id"], []).append(record)
    overlaps = 0
    worst_lag = 0.0
    worst_box = None
    starved = []  # passed over: another mailbox synced twice while this one waited
    not_reached = []  # never synced within the phase (capacity, if none was passed over)
    first_done = []
    for pk, syncs in by_box.items():
        syncs.sort(key=lambda r: r["start"])
        due = t0
        box_lag = 0.0
        for previous, current in itertools.pairwise(syncs):
            if current["start"] < previous["end"]:
                overlaps += 1
        for sync in syncs:
            box_lag = max(box_lag, sync["start"] - due)
            due = sync["next"] if sync["next"] is not None else float("inf")
        if due < t_end:
            box_lag = max(box_lag, t_end - due)  # still waiting at the end
        if syncs:
            first_done.append(syncs[0]["end"])
        if box_lag > worst_lag:
            worst_lag, worst_box = box_lag, pk
        if not syncs:
            not_reached.append(pk)
        elif _passed_over(pk, syncs, records, t0, t_end):
            starved.append(pk)
    all_first = len(first_done) == len(ids)
    first_round = (max(first_done) - t0) if all_first else None
    return {
        "phase": name,
        "syncs": len(records),
        "mailboxes_synced": len(first_done),
        "first_round_s": first_round,
        "mailboxes_per_minute_first_round": (len(ids) / first_round * 60) if first_round else None,
        "syncs_per_minute": len(records) / (t_end - t0) * 60,
        "slowest_lag_s": worst_lag,
        "slowest_mailbox": worst_box,
        "overlapping_syncs": overlaps,
        "starved": len(starved),
        "not_reached": len(not_reached),
        "messages_per_sync_first": args.messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10, help="messages per mailbox")
    parser.add_argument("--seconds", type=float, default=150.0, help="length of each phase")
    # 200 mailboxes every 90 s is about 133 syncs a minute: within what 4 sync processes
    # manage here, so lag measures the fleet, not an overload.
    parser.add_argument("--poll", type=int, default=90, help="MAILSYNC_POLL_SECONDS")
    parser.add_argument("--dispatch-every", type=float, default=5.0)
    parser.add_argument("--sync-processes", type=int, default=4)
    parser.add_argument("--flood-rate", type=int, default=300, help="webhook events per second")
    parser.add_argument("--flood-max", type=int, default=100_000, help="at most this many events")
    # one-queue: the control, the same flood sent to the sync queue (no routing by kind).
    parser.add_argument("--phases", default="quiet,flood,one-queue")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO_ROOT))
    from tests.servers.dovecot import DovecotServer

    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}")
    run_dir = Path(tempfile.mkdtemp(prefix="portal-fleet-dovecot-"))
    # Dovecot's mail processes run as another user that must reach the Maildirs.
    os.chmod(run_dir, 0o755)  # noqa: S103
    with temp_dir("portal-fleet-") as var_dir:
        redis_port = free_port()
        redis_process = redis_start(redis_port, var_dir)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        server = DovecotServer(run_dir)
        workers: list = []
        try:
            server.start()
            with throwaway_database(var_dir) as database_url:
                env = portal_env(
                    database_url=database_url,
                    var_dir=var_dir,
                    broker_url=redis_url,
                    MAILSYNC_POLL_SECONDS=str(args.poll),
                    ANYMAIL_WEBHOOK_SECRET="bench:bench",
                )
                env["MAILSYNC_FERNET_KEYS"] = _fernet_key()
                django_start(env)
                from portal.models import Firm

                firm = Firm.objects.create(name="Fleet Accounting", slug="fleet")
                start = time.monotonic()
                ids = mailboxes_create(server, args.mailboxes, args.messages, firm)
                print(
                    f"{len(ids)} mailboxes of {args.messages} messages on Dovecot "
                    f"127.0.0.1:{server.imap_port}, redis-server 127.0.0.1:{redis_port} "
                    f"(set-up {time.monotonic() - start:.1f}s)"
                )
                log_dir = var_dir / "fleet-log"
                log_dir.mkdir()
                workers = workers_start(env, log_dir, args.sync_processes)
                time.sleep(5)  # workers import Django and connect
                results = []
                for phase in args.phases.split(","):
                    result = phase_run(phase, args, ids, log_dir, redis_url)
                    results.append(result)
                    print(json.dumps(result))
                workers_stop(workers)
                workers = []
                report(results, args)
        finally:
            if workers:
                workers_stop(workers)
            server.stop()
            redis_process.terminate()
            redis_process.wait(10)
            shutil.rmtree(run_dir, ignore_errors=True)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def report(results: list[dict], args: argparse.Namespace) -> None:
    print()
    print(
        f"{args.mailboxes} mailboxes x {args.messages} messages, {args.sync_processes} sync "
        f"processes, poll {args.poll}s, phases of {args.seconds:.0f}s"
    )
    print(
        f"{'phase':>9} {'first round s':>13} {'mailboxes/min':>13} {'syncs/min':>9} "
        f"{'slowest lag s':>13} {'overlaps':>8} {'starved':>7} {'not reached':>11} {'events':>7} "
        f"{'tasks run':>9} {'backlog peak':>12}"
    )
    for r in results:
        first = f"{r['first_round_s']:.1f}" if r["first_round_s"] else "n/a"
        per_min = (
            f"{r['mailboxes_per_minute_first_round']:.0f}"
            if r["mailboxes_per_minute_first_round"]
            else "n/a"
        )
        print(
            f"{r['phase']:>9} {first:>13} {per_min:>13} {r['syncs_per_minute']:>9.0f} "
            f"{r['slowest_lag_s']:>13.1f} {r['overlapping_syncs']:>8} {r['starved']:>7} "
            f"{r['not_reached']:>11} "
            f"{r['flood_events']:>7} {r['flood_processed']:>9} {r['webhooks_backlog_peak']:>12}"
        )
    bad = [
        r["phase"]
        for r in results
        if r["phase"] != "one-queue" and (r["overlapping_syncs"] or r["starved"])
    ]
    ok = "no mailbox synced twice at once, none starved"
    print("checks:", "FAILED in " + ", ".join(bad) if bad else ok)


if __name__ == "__main__":
    main()
