"""ESP tracking webhook ingest under load, then processing of what was stored.

    .venv/bin/python bench/bench_webhook_ingest.py [--count 20000] [--concurrency 10]
        [--client wrk|python] [--db postgres|sqlite] [--broker redis|filesystem] [--profile]

Starts the portal under gunicorn (2 sync workers, as in production but fewer) on a free
loopback port, with ANYMAIL_WEBHOOK_SECRET set, a throwaway database (by default PostgreSQL:
a database beside $DATABASE_URL's or postgres://postgres@127.0.0.1:5432/portal, dropped
afterwards; --db sqlite for a temporary SQLite file) and, by default, Celery on Redis
(redis://127.0.0.1:6379/15, flushed before and after; --broker filesystem for folders in a
temporary directory). It pre-creates --count deliveries with ESP message ids, then, in one
run:

1. floor: the load generator against a static file served by whitenoise on the same server
   (gunicorn, WSGI and the middleware that comes before Django's views; no query), so the
   figure does not depend on the data.
2. ingest: --count Postmark-shaped tracking webhooks (4 in 5 "Delivery", 1 in 5 a hard
   "Bounce", built as tests/invoicing/test_webhooks.py builds them) POSTed with basic auth
   to /webhooks/anymail/postmark/tracking/: anymail's view, our receiver, a WebhookEvent row
   and a Celery message per event.
3. processing: the stored events through `webhook_events_process_batch` in this process, as
   the worker's task runs it (batches of WEBHOOK_BATCH events).

The load generator is wrk with a Lua script when installed (each thread stops itself after
its share of requests, and -d bounds the time), else a Python thread pool with the same fixed
number of requests. Prints events/s; no assertions.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import cProfile
import http.client
import io
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit  # found through the sys.path line above

WEBHOOK_PATH = "/webhooks/anymail/postmark/tracking/"
# A file under static/, served by whitenoise (see server_settings): no view, no query.
FLOOR_PATH = "/static/portal/portal.css"
SECRET = "bench:" + uuid.uuid4().hex
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()
BOUNCE_EVERY = 5  # one event in five is a hard bounce, the rest "Delivery"


def message_id(n: int) -> str:
    return f"bench-{n:08d}"


def recipient(n: int) -> str:
    return f"rcpt{n:08d}@{benchkit.CLIENT_DOMAIN}"


# Postmark's payloads as tests/invoicing/test_webhooks.py builds them, with placeholders the
# Python client and the Lua script both fill in: __ID__ (a number), __MID__ and __EMAIL__.
DELIVERED = json.dumps(
    {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "__MID__",
        "Recipient": "__EMAIL__",
        "Tag": "invoice",
        "DeliveredAt": "2024-11-05T16:40:00.0000000Z",
        "Details": "smtp;250 2.0.0 OK 1604597954 x13si1234567qkj.123 - gsmtp",
        "Metadata": {},
    }
)
BOUNCE = json.dumps(
    {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": "__ID__",
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "invoice",
        "MessageID": "__MID__",
        "Metadata": {},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, "
        "mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist. "
        "Please try double-checking the recipient's email address for typos or unnecessary "
        "spaces.",
        "Email": "__EMAIL__",
        "From": "invoices@portal.test",
        "BouncedAt": "2024-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Invoice #1",
    }
).replace('"__ID__"', "__ID__")


def body(i: int, total: int) -> bytes:
    """Event i. Requests past `total` (wrk's last in-flight ones) wrap onto real deliveries."""
    n = i % total
    template = BOUNCE if n % BOUNCE_EVERY == 0 else DELIVERED
    text = template.replace("__ID__", str(i + 1)).replace("__MID__", message_id(n))
    return text.replace("__EMAIL__", recipient(n)).encode()


LUA = """
local total, threads = {total}, {threads}
local method, path = "{method}", "{path}"
local headers = {{ ["Authorization"] = "{auth}", ["Content-Type"] = "application/json" }}
local delivered = [==[{delivered}]==]
local bounce = [==[{bounce}]==]
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

-- wrk's main thread sleeps for all of -d even after every thread stopped, so each thread
-- reports its own start and end (wall clock, ns) on stderr and the bench ends wrk with SIGINT.
local function now_ns()
  local pipe = io.popen("date +%s%N")
  local value = pipe:read("*l")
  pipe:close()
  return value
end

function init(args)
  started = now_ns()
  nxt = tid
  quota = math.floor((total - tid + threads - 1) / threads)
  answered = 0
end

function request()
  local i = nxt
  nxt = nxt + threads
  if method == "GET" then
    return wrk.format("GET", path)
  end
  local n = i % total
  local tpl = (n % {every} == 0) and bounce or delivered
  local body = tpl:gsub("__ID__", tostring(i + 1))
  body = body:gsub("__MID__", string.format("bench-%08d", n))
  body = body:gsub("__EMAIL__", string.format("rcpt%08d@{domain}", n))
  return wrk.format(method, path, headers, body)
end

-- A fixed number of requests: each thread stops itself once its share is answered.
function response(status, headers, body)
  answered = answered + 1
  if answered == quota then
    io.stderr:write("WRKTHREAD " .. started .. " " .. now_ns() .. "\\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end
"""


class LoadResult:
    def __init__(self, requests: int, seconds: float, failures: int, detail: str) -> None:
        self.requests = requests
        self.seconds = seconds
        self.failures = failures
        self.detail = detail

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def load_wrk(
    port: int, method: str, path: str, total: int, args: argparse.Namespace, work: Path
) -> LoadResult:
    threads = min(2, args.concurrency)
    script = work / f"load-{method.lower()}.lua"
    script.write_text(
        LUA.format(
            total=total,
            threads=threads,
            method=method,
            path=path,
            auth=AUTH,
            delivered=DELIVERED,
            bounce=BOUNCE,
            every=BOUNCE_EVERY,
            domain=benchkit.CLIENT_DOMAIN,
        )
    )
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{args.concurrency}",
        f"-d{int(args.max_seconds)}s",  # the time bound; the script's quota is the count bound
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path.split('?')[0]}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    spans = []
    for report in process.stderr:  # ends at -d at the latest: wrk exits then
        if report.startswith("WRKTHREAD "):
            spans.append([int(v) for v in report.split()[1:3]])
            if len(spans) == threads:
                process.send_signal(signal.SIGINT)  # every thread is done: print the summary
        else:
            print(f"wrk: {report}", end="", file=sys.stderr)  # a script error, say
    out, _ = process.communicate(timeout=30)
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if done is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    if len(spans) == threads:
        seconds = (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e9
    else:  # stopped by -d before the count was reached
        seconds = float(done.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[done.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = int(bad.group(1)) if bad else 0
    failures += sum(int(g) for g in errors.groups()) if errors else 0
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    detail = f"latency avg {latency.group(1)}, max {latency.group(3)}" if latency else ""
    if p99:
        detail += f", p99 {p99.group(1)}"
    return LoadResult(int(done.group(1)), seconds, failures, detail)


def load_python(
    port: int, method: str, path: str, total: int, args: argparse.Namespace, work: Path
) -> LoadResult:
    """Fixed `total` requests from `concurrency` threads, each with its own connection."""
    concurrency = args.concurrency
    deadline = time.monotonic() + args.max_seconds

    def worker(k: int) -> tuple[int, int]:
        done = failed = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": AUTH, "Content-Type": "application/json"}
        for i in range(k, total, concurrency):
            if time.monotonic() > deadline:
                break
            try:
                data = body(i, total) if method == "POST" else None
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                response.read()
                failed += not 200 <= response.status < 400
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()  # reconnects on the next request
            done += 1
        conn.close()
        return done, failed

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrency)))
    seconds = time.perf_counter() - start
    return LoadResult(
        sum(r[0] for r in results), seconds, sum(r[1] for r in results), "python client"
    )


def server_settings(work: Path) -> dict[str, str]:
    """Environment for the server: portal.settings plus whitenoise serving from the finders.

    collectstatic has not run (and must not write into the repository), so whitenoise is
    told to serve static/ directly; nothing else differs from portal.settings.
    """
    (work / "bench_server_settings.py").write_text(
        "from portal.settings import *  # noqa: F403\nWHITENOISE_USE_FINDERS = True\n"
    )
    path = os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH", "")]))
    return {"DJANGO_SETTINGS_MODULE": "bench_server_settings", "PYTHONPATH": path}


def server_start(port: int, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    gunicorn = Path(benchkit.PYTHON).parent / "gunicorn"
    if gunicorn.exists():
        command = [
            str(gunicorn),
            "portal.wsgi:application",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
        name = "gunicorn, 2 sync workers"
    else:
        command = [benchkit.PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        name = "manage.py runserver (gunicorn not installed)"
    process = subprocess.Popen(
        command,
        cwd=benchkit.REPO_ROOT,
        env={**os.environ, **env},
        start_new_session=True,  # its own process group, so stopping it stops its workers
    )

    def answers() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", FLOOR_PATH)
            status = conn.getresponse().status
            conn.close()
            return status == 200
        except OSError:
            if process.poll() is not None:
                raise SystemExit("the server exited at start") from None
            return False

    benchkit.wait_until(answers, seconds=60, what="the portal to answer")
    return process, name


def server_stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def create_deliveries(count: int) -> None:
    """`count` sent deliveries, each with the ESP message id one webhook will name."""
    import datetime

    from invoicing.models import Delivery, Invoice

    firm, [client] = benchkit.create_firm_with_clients(1)
    invoice = Invoice.objects.create(
        firm=firm, client=client, number=1, due_date=datetime.date(2030, 1, 31)
    )
    batch = 2000  # rows per INSERT batch; keeps statements within SQLite's limits
    for first in range(0, count, batch):
        Delivery.objects.bulk_create(
            Delivery(
                firm=firm,
                invoice=invoice,
                client=client,
                address=recipient(n),
                normalized=recipient(n),
                status=Delivery.Status.SENT,
                esp_message_id=message_id(n),
                verp_token=uuid.uuid4().hex,
            )
            for n in range(first, min(first + batch, count))
        )


def process_stored(max_seconds: float, profile: bool) -> tuple[int, float]:
    from invoicing.webhook_processing import webhook_events_process_batch

    profiler = cProfile.Profile() if profile else None
    done = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    if profiler:
        profiler.enable()
    while time.perf_counter() < deadline:
        claimed = webhook_events_process_batch()
        if not claimed:
            break
        done += claimed
    seconds = time.perf_counter() - start
    if profiler:
        profiler.disable()
        for key, title in (("tottime", "own time"), ("cumulative", "cumulative")):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(10)
            text = out.getvalue()
            print(f"\n--- cProfile of processing, top 10 by {title} ---")
            print(text[text.find("ncalls") :].rstrip())
        print("(--profile: the processing time below is inflated by cProfile)\n")
    return done, seconds


def queued_messages(broker_url: str, var_dir: Path) -> int:
    """Messages waiting on the broker's default queue."""
    if broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker_url)
        try:
            return int(client.llen("celery"))
        finally:
            client.close()
    folder = var_dir / "celery-broker" / "in"
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000, help="webhook events to post")
    parser.add_argument("--concurrency", type=int, default=10, help="connections at once")
    parser.add_argument("--client", choices=["wrk", "python"], help="default: wrk if installed")
    parser.add_argument(
        "--max-seconds", type=float, default=120, help="time bound of each phase (default 120)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the processing phase")
    parser.add_argument(
        "--db", choices=["postgres", "sqlite"], default="postgres", help="default: postgres"
    )
    parser.add_argument(
        "--broker", choices=["redis", "filesystem"], default="redis", help="default: redis"
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="DATABASE_CONN_MAX_AGE for the server (default 60: persistent connections; "
        "0 opens a PostgreSQL connection per request, the settings' default)",
    )
    args = parser.parse_args()
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    load = load_wrk if client == "wrk" else load_python

    with contextlib.ExitStack() as stack:
        var_dir = stack.enter_context(benchkit.temp_dir("bench-webhooks-"))
        database_url = stack.enter_context(benchkit.throwaway_database(var_dir, args.db))
        broker_url = "filesystem://"
        if args.broker == "redis":
            broker_url = stack.enter_context(benchkit.throwaway_redis())
        env = benchkit.portal_env(
            database_url=database_url,
            var_dir=var_dir,
            broker_url=broker_url,
            ANYMAIL_WEBHOOK_SECRET=SECRET,
            # A PostgreSQL connection per request costs more than the whole webhook view.
            DATABASE_CONN_MAX_AGE=str(args.conn_max_age),
        )
        benchkit.django_start(env)
        from django.db import connection
        from django.db.models import Count

        from invoicing.models import Delivery, DeliveryEvent, Suppression, WebhookEvent

        create_deliveries(args.count)
        connection.close()  # the server's workers should not wait on this process's locks
        port = benchkit.free_port()
        server, server_name = server_start(port, {**env, **server_settings(var_dir)})
        try:
            print(
                f"server: {server_name} on 127.0.0.1:{port}; database: {connection.vendor}; "
                f"broker: {broker_url.split(':')[0]}; CONN_MAX_AGE {args.conn_max_age}"
            )
            print(f"load generator: {client}, {args.concurrency} connections\n")
            floor = load(port, "GET", FLOOR_PATH, args.count, args, var_dir)
            ingest = load(port, "POST", WEBHOOK_PATH, args.count, args, var_dir)
        finally:
            server_stop(server)

        stored = WebhookEvent.objects.count()
        queued = queued_messages(broker_url, var_dir)
        processed, process_s = process_stored(args.max_seconds, args.profile)

        def line(name: str, result: LoadResult) -> None:
            print(
                f"{name:<34} {result.requests:6d} requests in {result.seconds:6.2f} s  "
                f"{result.rate:7.0f}/s  failed {result.failures}  ({result.detail})"
            )

        line(f"floor: GET {FLOOR_PATH}", floor)
        line("ingest: POST postmark tracking", ingest)
        print(
            f"stored WebhookEvent rows: {stored}; Celery messages queued: {queued}  "
            f"-> ingest {stored / ingest.seconds:.0f} events/s (aim >= 1000/s)"
        )
        print(f"ingest / floor: {ingest.rate / floor.rate:.2f} of the server's floor rate")
        print(
            f"processing (webhook_events_process_batch): {processed} events in {process_s:.2f} s  "
            f"{processed / process_s:.0f} events/s"
        )
        statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")))
        print(
            f"after processing: {DeliveryEvent.objects.count()} delivery events, "
            f"{Suppression.objects.count()} suppressions, deliveries by status {statuses}"
        )
        connection.close()


if __name__ == "__main__":
    main()
