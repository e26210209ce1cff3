"""The portal's pages at scale: one request, then 16 concurrent connections, per page.

    manage.py seed_scale                 # once, into the database DATABASE_URL names
                                         # (and the blob store under PORTAL_VAR_DIR: the
                                         # message page reads its raw mail; use the same)
    .venv/bin/python bench/bench_pages.py [--seconds 30] [--connections 16] [--only NAME ...]
    .venv/bin/python bench/bench_pages.py --against ../base --seconds 5 --rounds 4

Serves the portal with gunicorn as gunicorn.conf.py configures it, on loopback, over the
database `seed_scale` filled (``DATABASE_URL``, PostgreSQL; the bench only reads it, apart
from one session row for the signed-in owner, deleted at the end). For each page: the time
of one request (the median of 5, one after another), then wrk drives it at ``--connections``
connections for ``--seconds`` and reports p50/p95/p99 and requests/s. A bare Django view
(``/bench/floor/``, enabled by BENCH_FLOOR_VIEW for this server only: middleware, session and
member lookup, no page) runs in the same run as the floor; each page's p95 is also given as a
multiple of the floor's, and "cost": the floor's requests/s over the page's (one request of
the page in bare-view requests; steadier between runs than the p95 ratio). Aim: p95 <= 100 ms
and <= 4x the floor. Asserts nothing.

``--against CHECKOUT`` compares this checkout with another (a ``git worktree`` of the commit
before a change, sharing this virtualenv): both are served at once, and each page is driven on
one, then the other, ``--rounds`` times for ``--seconds`` each, the order swapped every round;
each side's figures are the medians of its slices, its cost over its own floor. On the 2-core
machines here the speed of whole runs drifts by 10-25% within minutes, more than most changes
measure; slices this short, taken in turns, see both sides under the same drift.

``--changes-every S``: while each page is driven, every S seconds the bench does to the
firm what a busy day does to its counts: a member links an address (the unlinked-mail
counts start again) and a bounce arrives (the firm's DeliveryProblemsVersion is raised, so
the counts per problem code and the cached problem cards start again too). The p95 and p99
then include the pages that came while the counts were being made again (raising the
version is the one other write the bench makes: it only makes the next dashboard count and
build its cards afresh).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import runpy
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchkit

LUA = """
wrk.headers["Cookie"] = "{cookie}"
wrk.headers["Host"] = "127.0.0.1"
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), bad))
end
"""


def pages(firm_slug: str) -> list[tuple[str, str]]:
    """(name, path) of every page measured, with real objects of the seeded firm."""
    from django.db.models import Count

    from invoicing.delivery.models import Delivery
    from invoicing.models import Invoice
    from mailsync.models import MessageClientLink
    from portal.models import Client, Firm

    firm = Firm.objects.get(slug=firm_slug)
    busiest = (
        MessageClientLink.objects.filter(client__firm=firm)
        .values("client_id")
        .annotate(n=Count("pk"))
        .order_by("-n")
        .first()["client_id"]
    )
    troubled = (
        Delivery.objects.filter(firm=firm).exclude(problem_code="").order_by("-created").first()
    )
    invoice = Invoice.objects.filter(firm=firm, deliveries__isnull=False).order_by("-number")[0]
    newest_message = (
        MessageClientLink.objects.filter(client_id=busiest)
        .order_by("-message_date", "-message_id")
        .values_list("message_id", flat=True)
        .first()
    )
    some_client = Client.objects.filter(firm=firm).order_by("pk")[len(firm_slug)]
    owner = firm.memberships.get(role="owner").user_id
    return [
        ("floor (bare view)", "/bench/floor/"),
        ("client list", "/clients/"),
        ("client list, page 200", "/clients/?page=200"),
        ("client list, sorted by newest", "/clients/?sort=-created"),
        ("client list, search", "/clients/?q=birch"),
        ("client list, search of an address", "/clients/?q=anna.1%40"),
        ("busiest client's Email tab", f"/clients/{busiest}/email/"),
        ("busiest client's Email tab, page 20", f"/clients/{busiest}/email/?page=20"),
        ("a message of the busiest client", f"/clients/{busiest}/email/{newest_message}/"),
        ("Problems dashboard", "/problems/"),
        ("Problems: delivery", "/problems/?kind=delivery"),
        ("Problems: mailbox sync", "/problems/?kind=sync"),
        ("Problems: sending domain", "/problems/?kind=domain"),
        ("Problems: a member's mailboxes", f"/problems/?member={owner}"),
        ("Problems: one code's cards", "/problems/?code=delivery.hard_bounce"),
        ("a client's Problems tab", f"/clients/{troubled.client_id}/problems/"),
        ("invoice list", "/invoices/"),
        ("invoice list, one client", f"/invoices/?client={some_client.pk}"),
        ("an invoice's delivery timeline", f"/invoices/{invoice.pk}/"),
        ("unlinked mail", "/mail/unlinked/"),
    ]


def owner_session(firm_slug: str) -> tuple[str, str]:
    """A signed-in session of the firm's owner, as the login view would make it."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from portal.models import Firm

    user = Firm.objects.get(slug=firm_slug).memberships.get(role="owner").user
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", session.session_key


def one_request(port: int, path: str, cookie: str, runs: int) -> tuple[float, int, int]:
    """Median seconds of `runs` requests one after another (after one to warm up), status,
    bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    times = []
    status = size = 0
    for _ in range(runs + 1):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1"})
        response = conn.getresponse()
        body = response.read()
        times.append(time.perf_counter() - start)
        status, size = response.status, len(body)
    conn.close()
    return statistics.median(times[1:]), status, size


def load(port: int, path: str, cookie: str, args: argparse.Namespace, work: Path) -> dict:
    script = work / "page.lua"
    script.write_text(LUA.format(cookie=cookie))
    command = [
        "wrk",
        "-t2",
        f"-c{args.connections}",
        f"-d{args.seconds}s",
        "--timeout",
        "120s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if found is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    requests, duration, p50, p95, p99, bad = (int(g) for g in found.groups())
    return {
        "rate": requests / (duration / 1e6),
        "p50": p50 / 1000,
        "p95": p95 / 1000,
        "p99": p99 / 1000,
        "requests": requests,
        "bad": bad,
    }


def firm_changes(firm_slug: str, every: float, stop: threading.Event) -> threading.Thread:
    """A thread that, every ``every`` seconds until ``stop``, starts the firm's cached
    counts again as linking an address and a new bounce would."""
    from django.db import connection
    from django.db.models import F

    from mailsync.selectors import unlinked_summary_forget
    from portal.models import Firm
    from troubleshooting.models import DeliveryProblemsVersion

    firm = Firm.objects.get(slug=firm_slug)

    def change() -> None:
        try:
            while not stop.wait(every):
                unlinked_summary_forget(firm=firm)
                DeliveryProblemsVersion.objects.filter(firm_id=firm.pk).update(
                    version=F("version") + 1
                )
        finally:
            connection.close()

    thread = threading.Thread(target=change, name="firm-changes", daemon=True)
    thread.start()
    return thread


def static_settings(work: Path, root: Path = benchkit.REPO_ROOT) -> dict[str, str]:
    """portal.settings with STATIC_ROOT in the run's folder, filled by collectstatic (pages
    name their hashed static files; the repository is never written to)."""
    (work / "bench_pages_settings.py").write_text(
        f"from portal.settings import *  # noqa: F403\nSTATIC_ROOT = {str(work / 'static')!r}\n"
    )
    if root == benchkit.REPO_ROOT:
        sys.path.insert(0, str(work))
    path = os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH", "")]))
    env = {"DJANGO_SETTINGS_MODULE": "bench_pages_settings", "PYTHONPATH": path}
    subprocess.run(
        [benchkit.PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=root,
        env={**os.environ, **env, "SECRET_KEY": "collectstatic"},
        check=True,
    )
    return env


def pages_named(firm_slug: str, only: list[str]) -> list[tuple[str, str]]:
    """`pages`, the floor and those named in ``only`` when it names any (``--only``)."""
    measured = pages(firm_slug)
    unknown = set(only) - {name for name, _path in measured}
    if unknown:
        raise SystemExit(f"no such page: {', '.join(sorted(unknown))}")
    return [p for p in measured if not only or p[0].startswith("floor") or p[0] in only]


def seeded_portal_env(work: Path, *, cache: str) -> dict[str, str]:
    """The portal's environment over the database `seed_scale` filled (``DATABASE_URL``),
    set in ``os.environ`` as well: its blob store, the bare view on, the shared cache, the
    owner signed in without a second factor, static files collected into ``work``."""
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres"):
        raise SystemExit("set DATABASE_URL to the PostgreSQL database seed_scale filled")
    env = benchkit.portal_env(
        database_url=database_url,
        # The blob store seed_scale wrote (the message page reads raw mail from it).
        var_dir=Path(os.environ["PORTAL_VAR_DIR"]) if "PORTAL_VAR_DIR" in os.environ else work,
        BENCH_FLOOR_VIEW="1",
        CACHE_URL=cache,
        # The bench signs the owner in with a session row, without a second factor.
        MFA_REQUIRED_FOR_OWNERS="0",
    )
    env.update(static_settings(work))
    os.environ.update(env)
    return env


def server_start(
    port: int, env: dict[str, str], root: Path = benchkit.REPO_ROOT
) -> subprocess.Popen:
    """gunicorn serving the checkout at ``root`` (this one unless ``--against`` names
    another), as its gunicorn.conf.py configures it."""
    gunicorn = Path(benchkit.PYTHON).parent / "gunicorn"
    command = [str(gunicorn), "-c", str(root / "gunicorn.conf.py")]
    command += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=root, env={**os.environ, **env})

    # A worker takes connections only once it has loaded and warmed up (gunicorn.conf.py),
    # 5-6 s each, and all of them start at once on the bench's cores: measured as soon as
    # the first one answered, the floor ran on one or two workers of four for the first
    # half of its time, and its requests/s (the "cost" of every page) came out at half.
    workers = runpy.run_path(str(root / "gunicorn.conf.py"))["workers"]
    answered: set[str] = set()

    def all_answer() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/floor/")
            response = conn.getresponse()
            if response.status == 200:
                answered.add(response.getheader("X-Worker", ""))
            conn.close()
        except OSError:
            pass
        return len(answered) >= workers

    benchkit.wait_until(all_answer, seconds=120, what=f"all {workers} gunicorn workers")
    return process


def server_stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # workers still busy with a slow page
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--firm", default="scale-main", help="the seeded firm's slug")
    parser.add_argument(
        "--only", action="append", default=[], help="a page's name, exactly; may be repeated"
    )
    parser.add_argument(
        "--cache", default="redis://127.0.0.1:6379/14", help="CACHE_URL; empty: per process"
    )
    parser.add_argument("--single-runs", type=int, default=5, help="requests for 'one req'")
    parser.add_argument(
        "--changes-every", type=float, default=0, help="seconds between changes (0: none)"
    )
    parser.add_argument(
        "--against",
        metavar="CHECKOUT",
        help="another checkout of the portal (a git worktree): serve both, and drive each "
        "page on each in turn, --rounds slices of --seconds",
    )
    parser.add_argument("--rounds", type=int, default=4, help="slices per page and side")
    args = parser.parse_args()
    with benchkit.temp_dir("bench-pages-") as work:
        env = seeded_portal_env(work, cache=args.cache)
        import django

        django.setup()
        from django.contrib.sessions.models import Session
        from django.db import connections

        cookie, session_key = owner_session(args.firm)
        measured = pages_named(args.firm, args.only)
        connections.close_all()
        if args.against:
            try:
                compare(args, work, env, cookie, measured)
            finally:
                Session.objects.filter(session_key=session_key).delete()
            return
        port = benchkit.free_port()
        server = server_start(port, env)
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        print(f"wrk, {args.connections} connections, {args.seconds} s per page; gunicorn "
              f"as gunicorn.conf.py sets it ({os.cpu_count()} cores)")  # fmt: skip
        if args.changes_every:
            print(f"the firm's counts start again every {args.changes_every:g} s")
        print()
        header = f"{'page':<36} {'one req':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'req/s':>7}"
        print(header + f" {'x floor':>7} {'cost':>6} {'KB':>6}")
        floor_p95 = floor_rate = None
        try:
            for name, path in measured:
                single, status, size = one_request(port, path, cookie, args.single_runs)
                if status != 200:
                    print(f"{name:<36} HTTP {status} for {path}: skipped")
                    continue
                stop = threading.Event()
                changes = (
                    firm_changes(args.firm, args.changes_every, stop)
                    if args.changes_every
                    else None
                )
                try:
                    result = load(port, path, cookie, args, work)
                finally:
                    stop.set()
                    if changes is not None:
                        changes.join()
                if floor_p95 is None:
                    floor_p95, floor_rate = result["p95"], result["rate"]
                ratio = result["p95"] / floor_p95 if floor_p95 else 0
                # The floor's p95 swings with scheduling (its p99 is often 5-10x its p95); the
                # ratio of throughputs, what one request of the page costs in floor requests,
                # moves far less between runs.
                cost = floor_rate / result["rate"] if result["rate"] else 0
                bad = f"  {result['bad']} failed" if result["bad"] else ""
                if not result["requests"]:
                    print(f"{name:<36} {single * 1000:>6.0f}ms  none answered in {args.seconds} s")
                    continue
                print(
                    f"{name:<36} {single * 1000:>6.0f}ms {result['p50']:>6.0f}ms "
                    f"{result['p95']:>6.0f}ms {result['p99']:>6.0f}ms {result['rate']:>7.1f} "
                    f"{ratio:>6.1f}x {cost:>5.1f}x {size / 1024:>6.0f}{bad}",
                    flush=True,
                )
        finally:
            server_stop(server)
            Session.objects.filter(session_key=session_key).delete()
        print(f"\nload average after: {Path('/proc/loadavg').read_text().strip()}")


# Seconds of the floor driven before each slice of a page (--against).
FLOOR_SLICE = 2


def compare(
    args: argparse.Namespace,
    work: Path,
    env: dict[str, str],
    cookie: str,
    measured: list[tuple[str, str]],
) -> None:
    """Each page on this checkout and on ``--against``, in turns: the machine's speed drifts
    by a tenth or more within minutes, more than most changes it is asked to show, and two
    whole runs one after the other measure the drift as much as the change. Each side's cost
    is its own floor's requests/s over the page's, the floor driven for FLOOR_SLICE seconds
    before each slice of the page (medians of the slices)."""
    other = Path(args.against).resolve()
    (work / "against").mkdir()
    sides = {
        "this": (benchkit.REPO_ROOT, env),
        "against": (other, {**env, **static_settings(work / "against", other)}),
    }
    ports = {side: benchkit.free_port() for side in sides}
    servers = {
        side: server_start(ports[side], side_env, root) for side, (root, side_env) in sides.items()
    }
    print(f"{benchkit.REPO_ROOT} (this) against {other}: {args.rounds} turns of {args.seconds} s")
    print(f"per page and side, {args.connections} connections ({os.cpu_count()} cores)\n")
    print(f"{'page':<36} {'req/s this':>10} {'against':>8} {'p95 this':>9} {'against':>8}"
          f" {'cost this':>9} {'against':>8}")  # fmt: skip
    floor_path = measured[0][1]
    floor_args = argparse.Namespace(**{**vars(args), "seconds": FLOOR_SLICE})
    try:
        for name, path in measured:
            runs: dict[str, list[dict]] = {side: [] for side in sides}
            floors: dict[str, list[dict]] = {side: [] for side in sides}
            for turn in range(args.rounds):
                for side in sorted(sides, reverse=turn % 2 == 1):
                    if path != floor_path:
                        # The floor again, just before: the page's cost is over a floor of
                        # the same minute (the machine's speed drifts within a run).
                        floors[side].append(load(ports[side], floor_path, cookie, floor_args, work))
                    runs[side].append(load(ports[side], path, cookie, args, work))
            rate = {side: statistics.median(r["rate"] for r in runs[side]) for side in sides}
            p95 = {side: statistics.median(r["p95"] for r in runs[side]) for side in sides}
            floor = {
                side: statistics.median(r["rate"] for r in floors[side])
                if floors[side]
                else rate[side]
                for side in sides
            }
            cost = {side: floor[side] / rate[side] if rate[side] else 0 for side in sides}
            print(
                f"{name:<36} {rate['this']:>10.1f} {rate['against']:>8.1f} "
                f"{p95['this']:>7.0f}ms {p95['against']:>6.0f}ms "
                f"{cost['this']:>8.2f}x {cost['against']:>7.2f}x",
                flush=True,
            )
    finally:
        for server in servers.values():
            server_stop(server)


if __name__ == "__main__":
    sys.exit(main())
