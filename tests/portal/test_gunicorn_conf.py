"""gunicorn.conf.py, the production server's settings, as gunicorn reads them."""

from __future__ import annotations

import gc
import os
import runpy

from django.conf import settings


def _conf() -> dict:
    return runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))


def test_workers_are_threaded_with_persistent_database_connections(monkeypatch):
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "")  # so that the test's end restores it
    monkeypatch.delenv("DATABASE_CONN_MAX_AGE")
    conf = _conf()
    assert conf["worker_class"] == "gthread"
    assert conf["wsgi_app"] == "portal.wsgi:application"
    assert os.environ["DATABASE_CONN_MAX_AGE"] == "60"


def test_a_loaded_worker_freezes_its_objects_out_of_the_collector():
    gc.collect()
    before = gc.get_freeze_count()
    try:
        _conf()["post_worker_init"](worker=None)
        assert gc.get_freeze_count() > before
        assert gc.get_freeze_count() > 10_000  # Django and the project, not a handful
    finally:
        gc.unfreeze()


def test_a_worker_takes_a_connection_only_with_a_thread_free_and_keeps_none_alive():
    """Kept alive, a connection stays with whichever worker took it first, and the workers
    that took more made the slowest requests (gunicorn.conf.py's docstring)."""
    conf = _conf()
    assert conf["worker_connections"] == conf["threads"]
    assert conf["keepalive"] == 0


def test_a_host_runs_one_worker_more_than_its_cores_of_two_requests_each(monkeypatch):
    """More requests in flight let one worker gather them while another idles (the
    docstring's measurements)."""
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    conf = _conf()
    assert (conf["workers"], conf["threads"], conf["worker_connections"]) == (3, 2, 2)


def test_the_environment_sets_workers_and_threads(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    conf = _conf()
    assert (conf["workers"], conf["threads"], conf["worker_connections"]) == (5, 1, 1)
