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
"""

import os

wsgi_app = "portal.wsgi:application"
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
keepalive = 5  # seconds an idle kept-alive connection waits for its next request

# Read by portal.settings in each worker (the workers inherit this process's environment).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "60")
