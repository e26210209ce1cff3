"""Where one request of each page spends its time, in-process, over the seeded firm.

    manage.py seed_scale                 # once (see bench_pages.py)
    .venv/bin/python bench/bench_page_split.py [--runs 20] [--only NAME ...]
    .venv/bin/python bench/bench_page_split.py --only NAME --profile 50   # where, by function
    .venv/bin/python bench/bench_page_split.py --only NAME --statements   # each query, timed
    .venv/bin/python bench/bench_page_split.py --calls 20     # Python calls per request

bench_pages.py says what a page costs under load; this says why. For each page of
bench_pages.py (the same pages, the same signed-in owner), through Django's test client in
this process (no gunicorn, no network, one request at a time):

- ``total``: the fastest of ``--runs`` requests, after two to warm up;
- ``queries`` and ``sql``: the statements one request runs and the time the process waits
  for them (sending, PostgreSQL's work, reading the rows back; the median of ``--splits``
  requests timed statement by statement, as ``render`` is);
- ``plan`` and ``run``: PostgreSQL's own share of that, summed over the request's SELECTs
  from ``EXPLAIN (ANALYZE)`` of each, run again on the same warm connection (the planner's
  time is paid on every request: Django does not prepare statements);
- ``render``: the templates, with the Python they set off (a page of rows read lazily is
  built there), the queries they run left out;
- ``rest``: everything else (middleware, the view's Python, building queries and model
  objects from rows).

The bare view (``/bench/floor/``) comes first as the baseline every page is compared with
("x floor": total over the floor's total). Reads only, apart from the owner's session row
(deleted at the end); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import benchkit
from bench_pages import pages_named, seeded_portal_env


def _explain(cursor, sql: str, params: object) -> tuple[float, float]:
    """(planning ms, execution ms) of one SELECT, as PostgreSQL reports them."""
    cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
    plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Planning Time"], plan[0]["Execution Time"]


@contextmanager
def _timed_templates(spent: list[float]) -> Iterator[list[int]]:
    """Time each top-level template render into ``spent``; yields the nesting depth (a
    statement run while it is above 0 was run by a template)."""
    from django.template.backends.django import Template

    original = Template.render
    depth = [0]

    def render(self, context=None, request=None):
        depth[0] += 1
        start = time.perf_counter()
        try:
            return original(self, context, request)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                spent.append(time.perf_counter() - start)

    Template.render = render
    try:
        yield depth
    finally:
        Template.render = original


def _one_request(get: Callable[[], object]) -> tuple[list[tuple[str, object, float, bool]], float]:
    """Run one request with its statements and templates timed: (statements as (sql,
    params, seconds, run by a template), seconds in templates)."""
    from django.db import connection

    statements: list[tuple[str, object, float, bool]] = []
    rendered: list[float] = []
    with _timed_templates(rendered) as depth:

        def wrapper(execute, sql, params, many, context):
            start = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                statements.append((sql, params, time.perf_counter() - start, depth[0] > 0))

        with connection.execute_wrapper(wrapper):
            get()
    return statements, sum(rendered)


def split(get: Callable[[], object], runs: int, splits: int) -> dict[str, float]:
    """One page's figures (milliseconds), by the measures the module docstring names."""
    from django.db import connection

    for _ in range(2):
        get()
    totals = []
    for _ in range(runs):
        start = time.perf_counter()
        get()
        totals.append(time.perf_counter() - start)
    sql, render = [], []
    for _ in range(splits):
        statements, rendered = _one_request(get)
        sql.append(sum(s[2] for s in statements))
        render.append(rendered - sum(s[2] for s in statements if s[3]))
    plan = run = 0.0
    with connection.cursor() as cursor:
        for statement, params, _seconds, _inside in statements:
            if statement.lstrip().upper().startswith(("SELECT", "WITH")):
                planning, execution = _explain(cursor, statement, params)
                plan, run = plan + planning, run + execution
    total = min(totals) * 1000
    sql_ms, render_ms = statistics.median(sql) * 1000, statistics.median(render) * 1000
    return {
        "total": total,
        "queries": len(statements),
        "sql": sql_ms,
        "plan": plan,
        "run": run,
        "render": render_ms,
        "rest": max(total - sql_ms - render_ms, 0.0),
    }


def _profiled(get: Callable[[], object], requests: int):
    """A cProfile of ``requests`` requests, after two to warm up."""
    import cProfile

    for _ in range(2):
        get()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        get()
    profiler.disable()
    return profiler


def profile(name: str, get: Callable[[], object], requests: int) -> None:
    """Print where ``requests`` requests of one page spend their time, by cProfile: the
    functions that take most of it themselves, then most with what they call."""
    import pstats

    profiler = _profiled(get, requests)
    print(f"\n=== {name}: {requests} requests, cProfile (times are over all of them)")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


def calls(name: str, get: Callable[[], object], requests: int) -> None:
    """Print the Python function calls one request of a page makes (cProfile's count, the
    mean of ``requests``). Unlike a time, it does not move with the machine: on the 2-core
    machines here the fastest of 40 requests of one page moved by a third between runs a
    minute apart, and a change of a tenth is only seen this way in process."""
    import pstats

    per_request = pstats.Stats(_profiled(get, requests)).total_calls / requests
    print(f"{name:<36} {per_request:>9,.0f}", flush=True)


def statements(name: str, get: Callable[[], object]) -> None:
    """Print each statement of one request of a page: its wait, PostgreSQL's planning and
    execution, whether a template ran it, and the start of its SQL."""
    from django.db import connection

    for _ in range(2):
        get()
    ran, _rendered = _one_request(get)
    print(f"\n=== {name}: {len(ran)} statements (ms: wait, plan, run; T: run by a template)")
    with connection.cursor() as cursor:
        for sql, params, seconds, inside in ran:
            plan = run = 0.0
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                plan, run = _explain(cursor, sql, params)
            print(
                f"{seconds * 1000:6.2f} {plan:6.2f} {run:6.2f} {'T' if inside else ' '} "
                f"{' '.join(sql.split())[:110]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="requests per page; the fastest")
    parser.add_argument("--splits", type=int, default=5, help="timed requests; the median")
    parser.add_argument("--firm", default="scale-main", help="the seeded firm's slug")
    parser.add_argument(
        "--only", action="append", default=[], help="a page's name, exactly; may be repeated"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="instead of the split: cProfile over N requests of each page, the top functions",
    )
    parser.add_argument(
        "--cache", default="redis://127.0.0.1:6379/14", help="CACHE_URL; empty: per process"
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=0,
        metavar="N",
        help="instead of the split: Python function calls per request, over N requests",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="instead of the split: each statement of one request of each page, timed",
    )
    args = parser.parse_args()
    with benchkit.temp_dir("bench-split-") as work:
        seeded_portal_env(work, cache=args.cache)
        import django

        django.setup()
        from django.test import Client

        from portal.models import Firm

        firm = Firm.objects.get(slug=args.firm)
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(firm.memberships.get(role="owner").user)
        measured = pages_named(args.firm, args.only)
        # Instead of the split, one of these for each page.
        instead: Callable[[str, Callable[[], object]], None] | None = None
        if args.statements:
            instead = statements
        elif args.calls:
            print(f"{'page':<36} {'calls/request':>13}")
            instead = partial(calls, requests=args.calls)
        elif args.profile:
            instead = partial(profile, requests=args.profile)
        if instead is not None:
            try:
                for name, path in measured:
                    instead(name, lambda path=path: client.get(path))
            finally:
                client.logout()
            return
        print(f"in-process, fastest of {args.runs} requests per page, milliseconds")
        print(
            f"{'page':<36} {'total':>6} {'x floor':>7} {'queries':>7} {'sql':>6} "
            f"{'plan':>6} {'run':>6} {'render':>6} {'rest':>6}"
        )
        floor = None
        try:
            for name, path in measured:

                def get(path: str = path, name: str = name) -> None:
                    response = client.get(path)
                    if response.status_code != 200:
                        raise SystemExit(f"{name}: HTTP {response.status_code} for {path}")

                figures = split(get, args.runs, args.splits)
                floor = floor or figures["total"]
                print(
                    f"{name:<36} {figures['total']:>6.1f} {figures['total'] / floor:>6.1f}x "
                    f"{figures['queries']:>7} {figures['sql']:>6.1f} {figures['plan']:>6.1f} "
                    f"{figures['run']:>6.1f} {figures['render']:>6.1f} {figures['rest']:>6.1f}",
                    flush=True,
                )
        finally:
            client.logout()  # the session row force_login made


if __name__ == "__main__":
    main()
