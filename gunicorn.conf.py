"""gunicorn's production settings, read from the working directory: run
``gunicorn portal.wsgi`` in the repository (or pass ``-c gunicorn.conf.py``). The webhook
bench (bench/bench_webhook_ingest.py) starts the server with this file too.

- Threaded workers (gthread), 2 per core x 4 threads (``WEB_CONCURRENCY``,
  ``GUNICORN_THREADS``). They keep connections alive. Sync workers close each one, and at
  hundreds of posts per second new connections then stalled for 1-3 s (probably ports still
  in TIME_WAIT; the webhook bench: 574 posts/s with these settings against 270 with 2 sync
  workers, same machine, back to back; bench/README.md).
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
keepalive = 5  # seconds an idle kept-alive connection waits for its next request

# Read by portal.settings in each worker (the workers inherit this process's environment).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "60")


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """Load what the first requests would load (portal.warmup), then move all the worker
    has loaded into the collector's permanent generation: it lives as long as the worker,
    and is no longer scanned by every full collection."""
    from portal.warmup import warm_up

    warm_up()
    gc.freeze()
