"""A batch of blobs on the file system: each name appears only once its bytes are on the
disk, with two file-system syncs for the whole batch; what a crash leaves is swept."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from portal import blobs
from portal.blobs import (
    BlobStoreUnavailable,
    blob_name,
    blob_put,
    blob_read,
    blob_storage,
    blobs_put_many,
    blobs_sweep,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(blobs._SYNCFS is None, reason="syncfs(2) is Linux's")


def _files(root: Path) -> tuple[set[str], set[str]]:
    """(blob names, temporary files) under the store's root."""
    names, temporaries = set(), set()
    for _folder, _dirs, files in os.walk(root):
        for name in files:
            (temporaries if name.startswith(blobs.TEMPORARY_PREFIX) else names).add(name)
    return names, temporaries


def _root() -> Path:
    return Path(blob_storage().location)


def test_a_batch_stores_every_blob_whole_and_says_which_were_there_already():
    there = blob_put(b"stored yesterday")
    datas = [b"first", b"stored yesterday", b"second", b"first"]

    refs = blobs_put_many(datas)

    assert [blob_read(ref.sha256) for ref in refs] == datas
    assert [ref.existed for ref in refs] == [False, True, False, False]
    assert refs[1].sha256 == there.sha256
    assert _files(_root()) == ({hashlib.sha256(d).hexdigest() for d in datas}, set())


def test_no_name_appears_before_the_bytes_are_synced_and_all_do_after(monkeypatch):
    datas = [f"message {n}".encode() for n in range(20)]
    seen: list[tuple[set[str], set[str]]] = []
    real = blobs._syncfs

    def syncfs(fd: int) -> None:
        seen.append(_files(_root()))
        real(fd)

    monkeypatch.setattr(blobs, "_syncfs", syncfs)

    blobs_put_many(datas)

    before_first, before_second = seen
    assert before_first[0] == set()  # only temporary files when their bytes are synced
    assert len(before_first[1]) == 20
    assert before_second == ({hashlib.sha256(d).hexdigest() for d in datas}, set())


def test_a_disk_that_fails_the_sync_stores_nothing_and_leaves_no_temporary_file(monkeypatch):
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs, "_syncfs", failing)

    with pytest.raises(BlobStoreUnavailable, match="Input/output error"):
        blobs_put_many([b"one", b"two"])

    assert _files(_root()) == (set(), set())


CRASH = """
import os, sys
import django
django.setup()
from portal import blobs
real = blobs._syncfs
def crash(fd):
    real(fd)
    os._exit(3)  # killed right after the bytes are synced, before any rename
blobs._syncfs = crash
blobs.blobs_put_many([b"alpha", b"beta", b"gamma"])
"""


@pytest.mark.django_db
def test_a_process_killed_midway_leaves_no_blob_and_the_sweep_removes_its_leftovers():
    root = _root()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "PORTAL_BLOB_ROOT": str(root),  # its blob store is this test's
    }
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH)], cwd=REPO, env=env, timeout=120
    )
    assert child.returncode == 3
    names, temporaries = _files(root)
    assert names == set()
    assert len(temporaries) == 3
    # Still inside the grace period: a write may be under way.
    assert blobs_sweep() == 0
    assert len(_files(root)[1]) == 3

    past = time.time() - 3 * 86400
    for folder, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past))

    assert blobs_sweep() == 3
    assert _files(root) == (set(), set())
    # The next sync writes the same mail again, whole.
    assert [ref.existed for ref in blobs_put_many([b"alpha", b"beta"])] == [False, False]
    assert blob_read(hashlib.sha256(b"beta").hexdigest()) == b"beta"
    assert os.path.exists(blob_storage().path(blob_name(hashlib.sha256(b"alpha").hexdigest())))
