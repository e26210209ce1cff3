"""gunicorn's production settings, read from the working directory: run
``gunicorn portal.wsgi`` in the repository (or pass ``-c gunicorn.conf.py``). The webhook
bench (bench/bench_webhook_ingest.py) starts the server with this file too.

- Threaded workers (gthread), 2 per core x 4 threads (``WEB_CONCURRENCY``,
  ``GUNICORN_THREADS``): a worker's core works on while one of its threads waits for
  PostgreSQL, with fewer processes to hold in memory.
- A worker takes a connection only when one of its threads is free, and answers it with
  ``Connection: close`` (``worker_connections`` = threads; ``keepalive = 0``, which gunicorn
  asks for then). A kept-alive connection stays with whichever worker accepted it, by
  chance: at 16 connections the four workers' CPU over a run was 54%, 40%, 31% and 22%,
  and the requests queued in the busiest made the tail. Without keep-alive, p95 was
  20-30% lower on four heavier pages (three runs each, alternated) and no longer swung
  from run to run on four lighter ones, for about 5% fewer requests a second (each one a
  new connection); static files were served twice as fast at 10 connections, and webhook
  posts/s stayed the same, with none of the 1-3 s connection stalls once seen with sync
  workers (bench/README.md, "eleventh session"). Behind the proxy the README asks for,
  the proxy keeps the browsers' connections alive; a new connection over loopback or the
  LAN costs a fraction of a millisecond.
- Persistent database connections (``DATABASE_CONN_MAX_AGE``, 60 s unless set): opening a
  PostgreSQL connection per request costs more than the whole webhook post (80 against 375
  posts/s before the webhook changes). Each thread holds one, so PostgreSQL must allow
  workers x threads connections per web host (16 here).
- Each worker loads its views, catalogues and templates before it accepts a connection
  (``post_worker_init``, portal.warmup): in a fresh worker the first request took 0.4-0.6 s
  and the first Problems page 1.3 s, with every request behind it waiting.
- Django's objects frozen out of the garbage collector once a worker has loaded the
  application and warmed up (``post_worker_init``): a full collection otherwise walks every
  module, model, URL pattern and template again, and paused a request now and then by
  50-80 ms at scale.
"""

import gc
import os

wsgi_app = "portal.wsgi:application"
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_connections = threads
keepalive = 0

# Read by portal.settings in each worker (the workers inherit this process's environment).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "60")


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """Load what the first requests would load (portal.warmup), then move all the worker
    has loaded into the collector's permanent generation: it lives as long as the worker,
    and is no longer scanned by every full collection."""
    from portal.warmup import warm_up

    warm_up()
    gc.freeze()
