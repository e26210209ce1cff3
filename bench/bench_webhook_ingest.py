"""ESP tracking webhook ingest under load, then processing of what was stored.

    .venv/bin/python bench/bench_webhook_ingest.py [--count 20000] [--esps postmark,sendgrid]
        [--batch 100] [--concurrency 10] [--client wrk|python] [--gunicorn-args "..."]
        [--db postgres|sqlite] [--broker redis|filesystem] [--conn-max-age N] [--profile]

Starts the portal under gunicorn with the production settings in gunicorn.conf.py (plus
--gunicorn-args, which come after them, to compare others) on a free loopback port, with
ANYMAIL_WEBHOOK_SECRET set, a throwaway database (by default PostgreSQL: a database beside
$DATABASE_URL's or postgres://postgres@127.0.0.1:5432/portal, dropped afterwards; --db sqlite
for a temporary SQLite file) and, by default, Celery on Redis (redis://127.0.0.1:6379/15,
flushed before and after; --broker filesystem for folders in a temporary directory). It
pre-creates --count deliveries with ESP message ids per ESP, then, in one run:

1. floor: the load generator against a static file served by whitenoise on the same server
   (gunicorn, WSGI and the middleware that comes before Django's views; no query), so the
   figure does not depend on the data.
2. ingest, Postmark (one event per post): --count tracking webhooks (4 in 5 "Delivery", 1 in
   5 a hard "Bounce", built as tests/invoicing/test_webhooks.py builds them) POSTed with
   basic auth to /webhooks/anymail/postmark/tracking/.
3. ingest, SendGrid (events in batches, as SendGrid posts them): --count events in posts of
   --batch events each to /webhooks/anymail/sendgrid/tracking/ (basic auth; no signature
   key is set, so anymail checks none).
   Each post is anymail's view, our receiver collecting the events, one WebhookEvent INSERT
   for the post and at most one Celery "kick" per second per web worker.
4. processing: the stored events through `webhook_events_process_batch` in this process, as
   the worker's task runs it (batches of WEBHOOK_BATCH events).

Each phase also reports the CPU that the server's processes, PostgreSQL (all of its
processes: the machine may be shared) and the load generator used, and the machine's busy
share, because the load generator shares the two cores with the server.

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
import runpy
import shlex
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
SENDGRID_PATH = "/webhooks/anymail/sendgrid/tracking/"
# A file under static/, served by whitenoise (see server_settings): no view, no query.
FLOOR_PATH = "/static/portal/portal.css"
SECRET = "bench:" + uuid.uuid4().hex
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()
BOUNCE_EVERY = 5  # one event in five is a hard bounce, the rest "Delivery"


def message_id(n: int, esp: str = "postmark") -> str:
    return f"bench-{n:08d}" if esp == "postmark" else f"bench-sg-{n:08d}"


def recipient(n: int, esp: str = "postmark") -> str:
    prefix = "rcpt" if esp == "postmark" else "sg"
    return f"{prefix}{n:08d}@{benchkit.CLIENT_DOMAIN}"


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


# SendGrid's events as tests/invoicing/test_webhooks.py builds them; __EID__ is unique per
# event (the ESP's sg_event_id), __MID__ the message id Anymail sent (anymail_id).
SG_DELIVERED = json.dumps(
    {
        "email": "__EMAIL__",
        "timestamp": 1700000000,
        "smtp-id": "<__MID__@portal.test>",
        "event": "delivered",
        "category": ["invoice"],
        "sg_event_id": "__EID__",
        "sg_message_id": "__MID__.filter0001",
        "anymail_id": "__MID__",
        "response": "250 2.0.0 OK 1700000000 x13si1234567qkj.123 - gsmtp",
    }
)
SG_BOUNCE = json.dumps(
    {
        "email": "__EMAIL__",
        "timestamp": 1700000000,
        "smtp-id": "<__MID__@portal.test>",
        "event": "bounce",
        "category": ["invoice"],
        "sg_event_id": "__EID__",
        "sg_message_id": "__MID__.filter0001",
        "anymail_id": "__MID__",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1",
        "type": "bounce",
    }
)


def body(i: int, total: int) -> bytes:
    """Postmark post i. Requests past `total` (wrk's last in-flight ones) wrap onto real
    deliveries."""
    n = i % total
    template = BOUNCE if n % BOUNCE_EVERY == 0 else DELIVERED
    text = template.replace("__ID__", str(i + 1)).replace("__MID__", message_id(n))
    return text.replace("__EMAIL__", recipient(n)).encode()


def sendgrid_body(i: int, total: int, batch: int) -> bytes:
    """SendGrid post i: events i*batch .. i*batch+batch-1, wrapping onto real deliveries."""
    events = []
    for e in range(i * batch, (i + 1) * batch):
        n = e % total
        template = SG_BOUNCE if n % BOUNCE_EVERY == 0 else SG_DELIVERED
        text = template.replace("__EID__", f"sg-{e}").replace("__MID__", message_id(n, "sg"))
        events.append(text.replace("__EMAIL__", recipient(n, "sg")))
    return ("[" + ",".join(events) + "]").encode()


LUA = """
local total, threads, batch, deliveries = {total}, {threads}, {batch}, {deliveries}
local kind, path = "{kind}", "{path}"
local headers = {{ ["Authorization"] = "{auth}", ["Content-Type"] = "application/json" }}
local delivered = [==[{delivered}]==]
local bounce = [==[{bounce}]==]
local sg_delivered = [==[{sg_delivered}]==]
local sg_bounce = [==[{sg_bounce}]==]
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

-- wrk's main thread sleeps for all of -d even after every thread stopped, so each thread
-- says on stderr when its share is answered; the bench takes the time as the lines arrive
-- and ends wrk with SIGINT.
function init(args)
  nxt = tid
  quota = math.floor((total - tid + threads - 1) / threads)
  answered = 0
end

function request()
  local i = nxt
  nxt = nxt + threads
  if kind == "get" then
    return wrk.format("GET", path)
  end
  if kind == "postmark" then
    local n = i % deliveries
    local tpl = (n % {every} == 0) and bounce or delivered
    local body = tpl:gsub("__ID__", tostring(i + 1))
    body = body:gsub("__MID__", string.format("bench-%08d", n))
    body = body:gsub("__EMAIL__", string.format("rcpt%08d@{domain}", n))
    return wrk.format("POST", path, headers, body)
  end
  local events = {{}}
  for e = i * batch, (i + 1) * batch - 1 do
    local n = e % deliveries
    local tpl = (n % {every} == 0) and sg_bounce or sg_delivered
    local event = tpl:gsub("__EID__", "sg-" .. tostring(e))
    event = event:gsub("__MID__", string.format("bench-sg-%08d", n))
    event = event:gsub("__EMAIL__", string.format("sg%08d@{domain}", n))
    events[#events + 1] = event
  end
  return wrk.format("POST", path, headers, "[" .. table.concat(events, ",") .. "]")
end

-- A fixed number of requests: each thread stops itself once its share is answered.
function response(status, headers, body)
  answered = answered + 1
  if answered == quota then
    io.stderr:write("WRKTHREAD done\\n")
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
    port: int, kind: str, path: str, total: int, args: argparse.Namespace, work: Path
) -> LoadResult:
    """`total` requests of `kind` ("get", "postmark" or "sendgrid") to `path`."""
    threads = min(2, args.concurrency)
    script = work / f"load-{kind}.lua"
    script.write_text(
        LUA.format(
            total=total,
            threads=threads,
            batch=args.batch,
            deliveries=args.count,
            kind=kind,
            path=path,
            auth=AUTH,
            delivered=DELIVERED,
            bounce=BOUNCE,
            sg_delivered=SG_DELIVERED,
            sg_bounce=SG_BOUNCE,
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
    cpu_before = os.times()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    finished = 0
    end = None
    for report in process.stderr:  # ends at -d at the latest: wrk exits then
        if report.startswith("WRKTHREAD "):
            finished += 1
            if finished == threads:
                end = time.perf_counter()
                process.send_signal(signal.SIGINT)  # every thread is done: print the summary
        else:
            print(f"wrk: {report}", end="", file=sys.stderr)  # a script error, say
    out, _ = process.communicate(timeout=30)
    cpu_after = os.times()
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if done is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    if end is not None:
        seconds = end - start
    else:  # stopped by -d before the count was reached
        seconds = float(done.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[done.group(3)]
    wrk_cpu = (cpu_after.children_user - cpu_before.children_user) + (
        cpu_after.children_system - cpu_before.children_system
    )
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = int(bad.group(1)) if bad else 0
    failures += sum(int(g) for g in errors.groups()) if errors else 0
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    detail = f"latency avg {latency.group(1)}, max {latency.group(3)}" if latency else ""
    if p99:
        detail += f", p99 {p99.group(1)}"
    detail += f"; wrk used {wrk_cpu / seconds:.2f} of 2 cores"
    return LoadResult(int(done.group(1)), seconds, failures, detail)


def load_python(
    port: int, kind: str, path: str, total: int, args: argparse.Namespace, work: Path
) -> LoadResult:
    """Fixed `total` requests from `concurrency` threads, each with its own connection."""
    concurrency = args.concurrency
    deadline = time.monotonic() + args.max_seconds
    method = "GET" if kind == "get" else "POST"

    def data(i: int) -> bytes | None:
        if kind == "postmark":
            return body(i, args.count)
        if kind == "sendgrid":
            return sendgrid_body(i, args.count, args.batch)
        return None

    def worker(k: int) -> tuple[int, int]:
        done = failed = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": AUTH, "Content-Type": "application/json"}
        for i in range(k, total, concurrency):
            if time.monotonic() > deadline:
                break
            try:
                conn.request(method, path, body=data(i), headers=headers)
                response = conn.getresponse()
                response.read()
                failed += not 200 <= response.status < 400
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()  # reconnects on the next request
            done += 1
        conn.close()
        return done, failed

    cpu_before = os.times()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrency)))
    seconds = time.perf_counter() - start
    cpu_after = os.times()
    own_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return LoadResult(
        sum(r[0] for r in results),
        seconds,
        sum(r[1] for r in results),
        f"python client, used {own_cpu / seconds:.2f} of 2 cores",
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


def server_start(
    port: int, env: dict[str, str], extra_args: list[str]
) -> tuple[subprocess.Popen, str]:
    """gunicorn with the production settings (gunicorn.conf.py), then `extra_args`."""
    gunicorn = Path(benchkit.PYTHON).parent / "gunicorn"
    if gunicorn.exists():
        config = benchkit.REPO_ROOT / "gunicorn.conf.py"
        command = [str(gunicorn), "-c", str(config), "--bind", f"127.0.0.1:{port}"]
        command += ["--log-level", "warning", *extra_args]
        # What the configuration file sets (with the environment it reads), for the report.
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            conf = runpy.run_path(str(config))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        name = (
            f"gunicorn -c gunicorn.conf.py ({conf['workers']} {conf['worker_class']} workers x "
            f"{conf.get('threads', 1)} threads) {' '.join(extra_args)}"
        ).rstrip()
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


class CPU:
    """CPU seconds used so far by the server's process group, by PostgreSQL's processes,
    and by the whole machine (busy and total, from /proc/stat). Linux only."""

    def __init__(self, server_pgid: int) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        self.server = self.postgres = 0.0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # ended meanwhile
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            if int(fields[2]) == server_pgid:
                self.server += seconds
            elif name.startswith("postgres"):
                self.postgres += seconds
        with open("/proc/stat") as fh:
            times = [int(v) for v in fh.readline().split()[1:]]
        self.machine_total = sum(times) / tick
        self.machine_busy = (sum(times) - times[3] - times[4]) / tick  # less idle and iowait

    @staticmethod
    def report(before: CPU, after: CPU, seconds: float) -> str:
        cores = os.cpu_count() or 1
        busy = (after.machine_busy - before.machine_busy) / (
            after.machine_total - before.machine_total
        )
        return (
            f"cores used: server {(after.server - before.server) / seconds:.2f}, "
            f"PostgreSQL {(after.postgres - before.postgres) / seconds:.2f}, "
            f"machine {busy * cores:.2f} of {cores}"
        )


def create_deliveries(count: int, esp: str = "postmark") -> None:
    """`count` sent deliveries, each with the ESP message id one webhook will name."""
    import datetime

    from invoicing.delivery.models import Delivery
    from invoicing.models import Invoice

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
                address=recipient(n, esp),
                normalized=recipient(n, esp),
                status=Delivery.Status.SENT,
                esp_message_id=message_id(n, esp),
                verp_token=uuid.uuid4().hex,
            )
            for n in range(first, min(first + batch, count))
        )


def process_stored(max_seconds: float, profile: bool) -> tuple[int, float]:
    from invoicing.delivery.webhook_events import webhook_events_process_batch

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
    parser.add_argument("--count", type=int, default=20_000, help="webhook events per ESP")
    parser.add_argument(
        "--esps", default="postmark,sendgrid", help="ESPs to post as (default postmark,sendgrid)"
    )
    parser.add_argument("--batch", type=int, default=100, help="events per SendGrid post")
    parser.add_argument("--concurrency", type=int, default=10, help="connections at once")
    parser.add_argument("--client", choices=["wrk", "python"], help="default: wrk if installed")
    parser.add_argument(
        "--gunicorn-args",
        default="",
        help="extra gunicorn arguments after gunicorn.conf.py's, e.g. \"--worker-class sync "
        '--workers 2" (the figures before gunicorn.conf.py existed)',
    )
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
        help="DATABASE_CONN_MAX_AGE for the server (default: gunicorn.conf.py's, 60 s; "
        "0 opens a PostgreSQL connection per request)",
    )
    args = parser.parse_args()
    esps = [esp.strip() for esp in args.esps.split(",") if esp.strip()]
    if not set(esps) <= {"postmark", "sendgrid"}:
        raise SystemExit("--esps takes postmark and/or sendgrid")
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    load = load_wrk if client == "wrk" else load_python

    with contextlib.ExitStack() as stack:
        var_dir = stack.enter_context(benchkit.temp_dir("bench-webhooks-"))
        database_url = stack.enter_context(benchkit.throwaway_database(var_dir, args.db))
        broker_url = "filesystem://"
        if args.broker == "redis":
            broker_url = stack.enter_context(benchkit.throwaway_redis())
        extra_env = {"ANYMAIL_WEBHOOK_SECRET": SECRET}
        if args.conn_max_age is not None:
            extra_env["DATABASE_CONN_MAX_AGE"] = str(args.conn_max_age)
        env = benchkit.portal_env(
            database_url=database_url, var_dir=var_dir, broker_url=broker_url, **extra_env
        )
        benchkit.django_start(env)
        from django.db import connection
        from django.db.models import Count

        from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression, WebhookEvent

        for esp in esps:
            create_deliveries(args.count, esp)
        connection.close()  # the server's workers should not wait on this process's locks
        port = benchkit.free_port()
        server_env = {**env, **server_settings(var_dir)}
        server, server_name = server_start(port, server_env, shlex.split(args.gunicorn_args))
        results: list[tuple[str, LoadResult, str, int]] = []
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        try:
            print(
                f"server: {server_name} on 127.0.0.1:{port}; database: {connection.vendor}; "
                f"broker: {broker_url.split(':')[0]}; CONN_MAX_AGE "
                f"{env.get('DATABASE_CONN_MAX_AGE', 'from gunicorn.conf.py')}"
            )
            print(f"load generator: {client}, {args.concurrency} connections\n")
            phases = [("floor: GET static file", "get", FLOOR_PATH, args.count)]
            if "postmark" in esps:
                phases.append(("ingest: Postmark, 1/post", "postmark", WEBHOOK_PATH, args.count))
            if "sendgrid" in esps:
                posts = -(-args.count // args.batch)
                name = f"ingest: SendGrid, {args.batch}/post"
                phases.append((name, "sendgrid", SENDGRID_PATH, posts))
            for name, kind, path, requests in phases:
                stored_before = WebhookEvent.objects.count()
                connection.close()
                before = CPU(server.pid)
                result = load(port, kind, path, requests, args, var_dir)
                cpu = CPU.report(before, CPU(server.pid), result.seconds)
                results.append((name, result, cpu, WebhookEvent.objects.count() - stored_before))
                connection.close()
        finally:
            server_stop(server)
        print(f"load average after: {Path('/proc/loadavg').read_text().strip()}\n")

        stored = WebhookEvent.objects.count()
        queued = queued_messages(broker_url, var_dir)
        processed, process_s = process_stored(args.max_seconds, args.profile)

        floor = results[0][1]
        for name, result, cpu, events in results:
            print(
                f"{name:<26} {result.requests:6d} requests in {result.seconds:6.2f} s "
                f"{result.rate:6.0f} requests/s  failed {result.failures}"
            )
            if events:
                # Events in the counted requests; wrk's last in-flight posts add a few more.
                planned = result.requests * (args.batch if "SendGrid" in name else 1)
                print(
                    f"{'':<26} {events} events stored: {planned / result.seconds:.0f} events/s "
                    f"(aim >= 1000/s); requests/s / floor {result.rate / floor.rate:.2f}"
                )
            print(f"{'':<26} {result.detail}")
            print(f"{'':<26} {cpu}")
        print(f"stored WebhookEvent rows: {stored}; Celery messages queued (kicks): {queued}")
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
