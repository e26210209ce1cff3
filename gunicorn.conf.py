"""gunicorn's production settings, read from the working directory: run
``gunicorn portal.wsgi`` in the repository (or pass ``-c gunicorn.conf.py``). The webhook
bench (bench/bench_webhook_ingest.py) starts the server with this file too.

- Threaded workers (gthread), one more than the cores x 2 threads (``WEB_CONCURRENCY``,
  ``GUNICORN_THREADS``): 3 x 2 on this 2-core machine. A worker with a thread free takes
  the next connection even while its other threads are busy, so by chance one worker holds
  several requests while another holds one, and the requests in the busy one take several
  times as long: with 4 workers x 4 threads the p95 was 1.5x the median. With fewer
  requests in flight the kernel hands each connection to the next free worker, first come
  first served. Measured at 16 connections on 2 cores (bench/README.md, "fifteenth
  session", 2-6 alternated runs each), the client list's p95 and requests/s: 4 x 4, 133-156
  ms and 162-190/s; 4 x 2, 115-127 ms; 4 x 1, 97-114 ms and 162-188/s; 3 x 2, 101-108 ms
  and 181-193/s (the best of both on every page tried; a client's Problems tab 151-171 ms
  against 205-225); 6 or 8 workers of one thread ran 10-20% fewer requests a second.
  Webhook posts took the same with 2 threads as with 4 (one thread: 12% fewer). Two threads
  rather than one because a few views wait on a member's mail server ("Test account", a
  sending server's or a new sending address's test: 20-30 s when it does not answer). Such
  a request takes the process's one slot for it (mailsync.server_waits), so the other
  thread is always free for pages; an email written on the Email tab is sent by a worker,
  never in the request (mailsync.written).
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
  workers x threads connections per web host (6 here).
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
workers = int(os.environ.get("WEB_CONCURRENCY", str((os.cpu_count() or 1) + 1)))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
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
