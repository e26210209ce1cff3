"""The blob sweep over a store of many named blobs, on the file system and in an S3 bucket.

    .venv/bin/python bench/bench_blob_sweep.py [--blobs 200000] [--s3-blobs 20000] [--orphans 20]

A throwaway PostgreSQL database (beside $DATABASE_URL's) gets one message row per blob, and
the store gets the blobs (small ones: the sweep never reads their bytes) plus ``--orphans``
that no row names. The sweep then runs as it does days later (every blob past the grace
period), and deletes exactly the orphans. For the S3 bucket, moto's standalone server on
loopback, started as the tests start it (tests/servers/s3.py; needs ``requirements-dev.txt``),
stands in for the store.

Printed for each store: the sweep's wall and CPU time, its SQL statements, and for S3 the
requests it sent by operation; in the same run, the baseline: listing the store alone
(``os.walk`` of the folders, or the bucket's flat listing), what any sweep must at least do.
Asserts only that the orphans, and nothing else, went.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchkit


def timed(action: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def statements_during(action: Callable[[], object]) -> tuple[object, int]:
    from django.db import connection

    count = 0

    def counting(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counting):
        return action(), count


def rows_naming(digests: list[str]) -> None:
    from django.db import connection

    from mailsync.models import Message
    from portal.models import Firm

    firm = Firm.objects.create(name="Sweep bench", slug=f"sweep-{len(digests)}-{os.getpid()}")
    Message.objects.bulk_create(
        (
            Message(firm=firm, key=digest, thread_key="t", raw_sha256=digest, size=64)
            for digest in digests
        ),
        batch_size=5000,
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE mailsync_message")  # as autovacuum would have by now


def digests(count: int, salt: str) -> list[str]:
    import hashlib

    return [hashlib.sha256(f"{salt}-{n}".encode()).hexdigest() for n in range(count)]


def sweep_later() -> int:
    from django.utils import timezone

    from portal.blobs import blobs_sweep

    return blobs_sweep(now=timezone.now() + datetime.timedelta(days=30))


def report(store: str, blobs: int, orphans: int, listing: float, swept: tuple, extra: str) -> None:
    (deleted, statements), wall, cpu = swept
    if deleted != orphans:
        raise SystemExit(f"{store}: the sweep deleted {deleted}, expected {orphans}")
    print(
        f"{store}: {blobs:,} named blobs + {orphans} orphans; listing alone {listing:.2f} s; "
        f"sweep {wall:.2f} s wall, {cpu:.2f} s CPU, {statements} SQL statements, "
        f"deleted {deleted}{extra} ({wall / listing:.1f}x the listing)"
    )


def file_system(root: Path, count: int, orphans: int) -> None:
    from portal.blobs import blob_name

    named = digests(count, "fs")
    rows_naming(named)
    for digest in named + digests(orphans, "fs-orphan"):
        path = root / blob_name(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 64)
    _, listing, _ = timed(lambda: sum(len(files) for _d, _s, files in os.walk(root)))
    swept = timed(lambda: statements_during(sweep_later))
    report("file system", count, orphans, listing, swept, "")


def s3(count: int, orphans: int) -> None:
    from django.conf import settings
    from django.test.utils import override_settings

    from portal.blobs import blob_name, blob_storage
    from tests.servers.s3 import bucket_create, requests_during, running_s3_server, store_settings

    with running_s3_server() as server:
        bucket = bucket_create(server)
        blobs = store_settings(bucket, settings.BLOB_S3_BACKEND, settings.BLOB_S3_OPTIONS)
        client = server.client(connections=16)  # one per uploading thread
        named = digests(count, "s3")
        rows_naming(named)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda d: client.put_object(
                        Bucket=bucket.name, Key=blob_name(d), Body=b"x" * 64
                    ),
                    named + digests(orphans, "s3-orphan"),
                )
            )

        def list_all() -> int:
            pages = client.get_paginator("list_objects").paginate(Bucket=bucket.name)
            return sum(len(page.get("Contents", ())) for page in pages)

        _, listing, _ = timed(list_all)
        sent: Counter = Counter()

        def sweep_counting_requests() -> int:
            deleted, requests = requests_during(blob_storage(), sweep_later)
            sent.update(requests)
            return deleted

        with override_settings(STORAGES={**settings.STORAGES, "blobs": blobs}):
            swept = timed(lambda: statements_during(sweep_counting_requests))
        requests = ", ".join(f"{name} {n:,}" for name, n in sorted(sent.items()))
        report("S3 (moto)", count, orphans, listing, swept, f"; requests: {requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=200_000, help="named blobs on the disk")
    parser.add_argument("--s3-blobs", type=int, default=20_000, help="named blobs in S3")
    parser.add_argument("--orphans", type=int, default=20)
    args = parser.parse_args()
    with (
        benchkit.temp_dir("bench-sweep-") as work,
        benchkit.throwaway_database(work) as database_url,
    ):
        benchkit.django_start(benchkit.portal_env(database_url=database_url, var_dir=work))
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        file_system(work / "blobs", args.blobs, args.orphans)
        if args.s3_blobs:
            s3(args.s3_blobs, args.orphans)


if __name__ == "__main__":
    main()
