"""An S3-compatible object store on loopback, for the blob store's S3 backend.

moto's standalone server (``moto_server``) speaks S3's REST API over HTTP; the portal reaches
it as it reaches any S3-compatible store in production: django-storages' ``S3Storage`` with
boto3, an endpoint URL and keys. MinIO would be the closer production stand-in, but it is in
neither Debian's packages nor PyPI here, and building it from source would take longer than
the whole test run.

Name the fixtures in a conftest.py (as tests/mailsync/conftest.py does)::

    s3_server = s3.s3_server
    s3_blob_store = s3.s3_blob_store
    s3_document_store = s3.s3_document_store

``s3_server`` runs once per session on a free port; ``s3_blob_store`` and
``s3_document_store`` give each test a new, empty bucket and point the portal's blob store
(raw mail) or its client documents at it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.servers.dovecot_fixtures import require

__all__ = [
    "S3Bucket",
    "S3Server",
    "bucket_create",
    "requests_during",
    "running_s3_server",
    "s3_blob_store",
    "s3_document_store",
    "s3_server",
    "store_settings",
]

ACCESS_KEY = "portal-test-access"
SECRET_KEY = "portal-test-secret"  # a loopback server's test key
REGION = "eu-north-1"
_buckets = itertools.count(1)
T = TypeVar("T")


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self, *, connections: int = 10):  # type: ignore[no-untyped-def]
        """A boto3 client of the server (``connections``: its pool, one per thread using it)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(max_pool_connections=connections),
        )


@dataclass(frozen=True)
class S3Bucket:
    server: S3Server
    name: str

    def keys(self) -> list[str]:
        listed = self.server.client().list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _missing() -> str | None:
    try:
        import boto3  # noqa: F401
        import storages  # noqa: F401
    except ImportError as exc:
        return f"the S3 blob store tests need django-storages[s3] and boto3 ({exc})"
    if shutil.which("moto_server", path=str(Path(sys.executable).parent)) is None:
        return "moto_server is not installed (pip install 'moto[server]')"
    return None


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """moto's server on a free loopback port, for as long as the block runs (the benches
    start it this way too); RuntimeError if it does not answer."""
    port = _free_port()
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AWS_DEFAULT_REGION": REGION},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the loopback S3 server did not start") from None
                time.sleep(0.1)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    require(_missing())
    try:
        with running_s3_server() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


def bucket_create(server: S3Server) -> S3Bucket:
    """A new, empty bucket on the server."""
    bucket = S3Bucket(server, f"portal-{os.getpid()}-{next(_buckets)}")
    server.client().create_bucket(
        Bucket=bucket.name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return bucket


def store_settings(bucket: S3Bucket, backend: str, options: dict) -> dict:
    """The store as the portal's settings configure it for a bucket (portal.settings)."""
    return {
        "BACKEND": backend,
        "OPTIONS": {
            **options,
            "bucket_name": bucket.name,
            "endpoint_url": bucket.server.endpoint,
            "region_name": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        },
    }


@pytest.fixture
def s3_blob_store(s3_server: S3Server, settings) -> S3Bucket:
    """A new bucket, and the portal's blob store in it, as BLOB_STORAGE=s3 configures it."""
    bucket = bucket_create(s3_server)
    blobs = store_settings(bucket, settings.BLOB_S3_BACKEND, settings.BLOB_S3_OPTIONS)
    settings.STORAGES = {**settings.STORAGES, "blobs": blobs}
    return bucket


@pytest.fixture
def s3_document_store(s3_server: S3Server, settings) -> S3Bucket:
    """A new bucket, and the client documents in it, as MEDIA_STORAGE=s3 configures it."""
    bucket = bucket_create(s3_server)
    options = {**settings.S3_OPTIONS, "file_overwrite": False}
    documents = store_settings(bucket, settings.MEDIA_S3_BACKEND, options)
    settings.STORAGES = {**settings.STORAGES, "default": documents}
    return bucket


def requests_during(storage, action: Callable[[], T]) -> tuple[T, Counter]:  # type: ignore[no-untyped-def]
    """What ``action`` returns, and the S3 operations (ListObjects, HeadObject...)
    ``storage`` sent while it ran, by name."""
    sent: Counter = Counter()

    def count(event_name: str, **kwargs: object) -> None:
        sent[event_name.rsplit(".", 1)[-1]] += 1

    events = storage.connection.meta.client.meta.events
    events.register("before-send.s3", count)
    try:
        return action(), sent
    finally:
        events.unregister("before-send.s3", count)
