"""A content-addressed blob store for raw mail, through Django's storage API.

Each blob is stored once under the sha256 of its bytes (``sha256/ab/cd/abcd…``) in the
storage alias ``STORAGES["blobs"]``: the file system under ``PORTAL_VAR_DIR/blobs`` by default
(``BlobFileSystemStorage``), any S3-compatible store through django-storages in production
(see the README). The database keeps the sha256 and what is queried; never the bytes.

The rules that keep mail from being lost:

- **The blob is written before the row that names it is committed.** A crash in between
  leaves an orphan blob (harmless), never a row without its bytes. The file system backend
  writes to a temporary file, fsyncs it and renames it into place, so a blob is either whole
  or absent, and it is durable before the caller's transaction commits.
  A batch of blobs (``blobs_put_many``) keeps that order with two syncs of the whole file
  system instead of one fsync per blob and per folder: every temporary file written, synced,
  then all renamed, synced again. A crash before the renames leaves temporary files, which
  the sweep removes.
- **Nothing deletes a blob when a row goes.** Several rows may name one blob (content
  addressing). ``blobs_sweep`` (a periodic task) deletes a blob only when no row names it
  and it is older than a grace period (``BLOB_SWEEP_GRACE_HOURS``).
- **A blob found already there may be an orphan the sweep is deleting right now.** A writer
  that reuses one calls ``blobs_confirm`` inside its transaction: it takes a shared
  PostgreSQL advisory lock (held until commit) and re-writes the blob if it is gone. The
  sweep deletes only while holding the same lock exclusively, after checking references, so
  it either sees the writer's committed row or ran entirely before the writer's check. A
  blob the writer created itself is new, so the grace period protects it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import hashlib
import logging
import os
import posixpath
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import connection as db
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

BLOB_ALIAS = "blobs"
PREFIX = "sha256"
# Key of the PostgreSQL advisory lock between writers reusing a blob (shared) and the sweep
# (exclusive). Any fixed number, unique among the portal's advisory locks.
SWEEP_LOCK = 0x0B10B5EE
# Every (model label, field) that names blobs by sha256: the sweep keeps what any names.
REFERENCES: list[tuple[str, str]] = [("mailsync.Message", "raw_sha256")]


class BlobMissing(Exception):
    """A row names a blob the store does not have (an operator deleted it, or restored the
    database without the blob store)."""


class BlobStoreUnavailable(Exception):
    """The store could not take a blob (a full or read-only disk, a bucket out of reach or
    refusing the keys): the platform's trouble, not a mailbox's. Nothing naming the blob was
    committed; the write is simply tried again later."""


def _store_errors() -> tuple[type[BaseException], ...]:
    """What the configured backends raise when the store itself fails."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 backend installed (requirements-s3.txt)
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


# When the store last failed a write, for the status page: a cache entry that every process
# writing blobs shares, cleared by the next write that works in a process that saw a failure
# (and expiring, in case none writes again).
FAILED_KEY = "portal:blobs:failed-at"
FAILED_SHOWN = 3600  # seconds
_failed_here = threading.Event()


def store_failed_at() -> datetime.datetime | None:
    """When a write to the blob store last failed, if none has worked since."""
    return cache.get(FAILED_KEY)


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except _store_errors() as exc:
        _failed_here.set()
        # Only a record for the status page: a cache out of reach too must not hide the
        # store's own error.
        with contextlib.suppress(Exception):
            cache.set(FAILED_KEY, timezone.now(), FAILED_SHOWN)
        raise BlobStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if _failed_here.is_set():
        with contextlib.suppress(Exception):
            cache.delete(FAILED_KEY)
            _failed_here.clear()


class BlobFileSystemStorage(FileSystemStorage):
    """The file system store: atomic, durable writes; an existing name is never renamed.

    Django's ``FileSystemStorage`` writes straight to the final path (a crash leaves a
    partial file under the name of whole content) and picks another name when one exists.
    Here a blob goes to a temporary file in the same folder, is fsynced, then renamed over
    the name (two writers of the same content both leave the same whole file); the folder is
    fsynced too, so the name survives a power cut.
    """

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name  # content-addressed: the same name is the same bytes

    def _save(self, name: str, content) -> str:  # type: ignore[no-untyped-def]
        for folder in self.write_durable(name, content.chunks()):
            _fsync_dir(folder)
        return name

    def write_durable(self, name: str, chunks: Iterable[bytes]) -> list[str]:
        """Write the blob whole and fsync its data; returns the folders whose entries
        changed (the blob's, and any created for it), which the caller fsyncs: one batch
        of blobs can then fsync each folder once."""
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        changed = [directory]
        temporary, created = self._temporary_write(full_path, chunks, fsync=True)
        if created:
            changed += [os.path.dirname(directory), os.path.dirname(os.path.dirname(directory))]
        try:
            os.replace(temporary, full_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return changed

    def write_batch_durable(self, blobs: dict[str, bytes]) -> None:
        """Write each blob (name -> bytes) so that its name appears only once its bytes are
        durable, as ``write_durable`` does, with two ``syncfs`` for the batch instead of an
        fsync per blob and per folder. The per-blob fsyncs cost the machine about 0.5 ms of
        CPU each, some 4.5 s of a 10k mailbox sync that the parse process and PostgreSQL
        were waiting for (bench/README.md: "a batch's blobs synced together")."""
        pending: list[tuple[str, str]] = []  # (temporary, final path) not renamed yet
        with _file_system_sync(self.location) as sync:
            try:
                for name, data in blobs.items():
                    full_path = self.path(name)
                    temporary, _created = self._temporary_write(full_path, [data], fsync=False)
                    pending.append((temporary, full_path))
                sync()  # every temporary file's bytes are on the disk
                while pending:
                    temporary, full_path = pending[-1]
                    os.replace(temporary, full_path)
                    pending.pop()
                sync()  # and the names
            except BaseException:
                for temporary, _full_path in pending:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temporary)
                raise

    def _temporary_write(
        self, full_path: str, chunks: Iterable[bytes], *, fsync: bool
    ) -> tuple[str, bool]:
        """A temporary file beside ``full_path`` (its folder made if missing) holding
        ``chunks``, its data fsynced if ``fsync``; returns its path and whether the folder
        was made. A failed write leaves no temporary file."""
        directory = os.path.dirname(full_path)
        created = not os.path.isdir(directory)
        if created:
            os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                if fsync:
                    out.flush()
                    os.fdatasync(out.fileno())
            os.chmod(temporary, self.file_permissions_mode or 0o644)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return temporary, created


# A blob being written; what a crash leaves of one is removed by the sweep.
TEMPORARY_PREFIX = ".tmp-"


def _fsync_dir(folder: str) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _libc_syncfs():  # type: ignore[no-untyped-def]
    """Linux's syncfs(2) (not in the os module), or None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    return function


_SYNCFS = _libc_syncfs()


def file_durable(storage: Storage, name: str) -> None:
    """Put one file written to a local file system ``storage`` (and its name) on the disk;
    other stores keep what they acknowledged."""
    if not isinstance(storage, FileSystemStorage):
        return
    path = storage.path(name)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(os.path.dirname(path))


@contextlib.contextmanager
def files_durable(storage: Storage) -> Iterator[None]:
    """The files written to ``storage`` inside the block are on the disk when it ends (one
    syncfs for all of them), for a local file system store where syncfs(2) exists; other
    stores (S3 acknowledges a write once it is kept) are left as they are."""
    if _SYNCFS is None or not isinstance(storage, FileSystemStorage):
        yield
        return
    with _file_system_sync(storage.location) as sync:
        yield
        sync()


@contextlib.contextmanager
def _file_system_sync(location: str) -> Iterator[Callable[[], None]]:
    """A function that puts the file system holding ``location`` on the disk (syncfs).
    The folder is opened on entering, before the caller writes: syncfs reports the
    write-back errors met since the descriptor was opened, so one the kernel met while
    flushing the caller's pages early is not missed."""
    os.makedirs(location, exist_ok=True)
    root = os.open(location, os.O_RDONLY)
    try:
        yield lambda: _syncfs(root)
    finally:
        os.close(root)


def _syncfs(fd: int) -> None:
    """Flush the file system that holds ``fd`` (data and metadata) to the disk."""
    if _SYNCFS(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def blob_storage() -> Storage:
    return storages[BLOB_ALIAS]


def blob_name(sha256: str) -> str:
    return f"{PREFIX}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int
    # The blob was already in the store: the caller must ``blobs_confirm`` it in the
    # transaction that commits the row naming it (it may be an orphan being swept).
    existed: bool


def blob_put(data: bytes, *, sha256: str | None = None) -> BlobRef:
    """Store ``data`` (durably, before returning) unless the store has it already;
    BlobStoreUnavailable if the store fails."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    storage = blob_storage()
    name = blob_name(digest)
    with _writing():
        if storage.exists(name):
            return BlobRef(digest, len(data), existed=True)
        storage.save(name, ContentFile(data))
    return BlobRef(digest, len(data), existed=False)


# Where a batch cannot be synced whole (no syncfs, or an S3 store), its blobs are written by
# this many threads: each write waits on its fsync or its request (the GIL is released), and
# the file system commits concurrent fsyncs together. Measured on this machine (45 KB blobs,
# under load): 8 ms per blob one at a time, 0.8 ms with 16.
PUT_THREADS = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def io_threads() -> ThreadPoolExecutor:
    """The process's pool for file writes that wait on the disk (blobs, documents)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="blob-put")
        return _pool


def blobs_put_many(datas: list[bytes]) -> list[BlobRef]:
    """``blob_put`` for each of ``datas`` (in order), written in parallel; every blob is
    durable when this returns (BlobStoreUnavailable if the store fails)."""
    if len(datas) <= 1:
        return [blob_put(data) for data in datas]
    storage = blob_storage()
    if not isinstance(storage, BlobFileSystemStorage):
        return list(io_threads().map(blob_put, datas))
    if _SYNCFS is not None:
        return _blobs_put_batch(storage, datas)

    def put(data: bytes) -> tuple[BlobRef, list[str]]:
        digest = hashlib.sha256(data).hexdigest()
        name = blob_name(digest)
        if storage.exists(name):
            return BlobRef(digest, len(data), existed=True), []
        return BlobRef(digest, len(data), existed=False), storage.write_durable(name, [data])

    with _writing():
        results = list(io_threads().map(put, datas))
        folders = {folder for _ref, changed in results for folder in changed}
        list(io_threads().map(_fsync_dir, sorted(folders, key=len, reverse=True)))
    return [ref for ref, _changed in results]


def _blobs_put_batch(storage: BlobFileSystemStorage, datas: list[bytes]) -> list[BlobRef]:
    refs: list[BlobRef] = []
    new: dict[str, bytes] = {}
    with _writing():
        for data in datas:
            digest = hashlib.sha256(data).hexdigest()
            name = blob_name(digest)
            existed = name not in new and storage.exists(name)
            if not existed:
                new[name] = data
            refs.append(BlobRef(digest, len(data), existed=existed))
        if new:
            storage.write_batch_durable(new)
    return refs


def blob_paths(refs: list[BlobRef]) -> list[str] | None:
    """Where these blobs are on this machine's file system, for a process that reads them
    itself; None when the store is not a local file system (S3)."""
    storage = blob_storage()
    if not isinstance(storage, BlobFileSystemStorage):
        return None
    return [storage.path(blob_name(ref.sha256)) for ref in refs]


def blob_read(sha256: str) -> bytes:
    """The bytes of one blob; ``BlobMissing`` if the store does not have it."""
    try:
        with blob_storage().open(blob_name(sha256), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise BlobMissing(sha256) from None
    except OSError as exc:  # S3 backends raise their own errors for a missing key
        if not blob_storage().exists(blob_name(sha256)):
            raise BlobMissing(sha256) from exc
        raise


def _lock(*, shared: bool) -> None:
    if db.vendor != "postgresql":
        return  # SQLite (development) serialises writers anyway; see the module docstring
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [SWEEP_LOCK])


def blobs_confirm(items: Iterable[tuple[BlobRef, bytes]]) -> None:
    """Inside the transaction that commits rows naming these blobs: make sure the reused
    ones (``existed``) are still there, writing them again if the sweep took them. Holds
    the sweep off until the transaction ends. Blobs this writer created need nothing."""
    reused = [(ref, data) for ref, data in items if ref.existed]
    if not reused:
        return
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("blobs_confirm must run inside the transaction that commits the rows")
    _lock(shared=True)
    storage = blob_storage()
    with _writing():
        for ref, data in reused:
            if not storage.exists(blob_name(ref.sha256)):
                storage.save(blob_name(ref.sha256), ContentFile(data))


def _walk(
    storage: Storage, folder: str, temporaries: list[str]
) -> Iterator[tuple[str, datetime.datetime | None]]:
    """Every blob under ``folder``: (sha256, its modified time when the listing gives it).
    The names of the temporary files a crash left are added to ``temporaries``.

    An S3 bucket is listed flat, a page of 1,000 keys per request, with each key's time:
    walked folder by folder through ``listdir`` it took a request per folder (65,536 for
    sha256/ab/cd/) and then one more per blob for its age. A file system is walked
    (its ages are asked only of the few blobs that may go)."""
    bucket = getattr(storage, "bucket", None)  # django-storages' S3Storage
    if bucket is not None:
        prefix = posixpath.join(storage.location, folder) + "/"
        for item in bucket.objects.filter(Prefix=prefix):
            name = item.key.rsplit("/", 1)[-1]
            if len(name) == 64 and not name.startswith("."):
                yield name, item.last_modified
        return
    try:
        directories, files = storage.listdir(folder)
    except FileNotFoundError:  # nothing stored yet
        return
    for name in files:
        if len(name) == 64 and not name.startswith("."):
            yield name, None
        elif name.startswith(TEMPORARY_PREFIX):
            temporaries.append(f"{folder}/{name}")
    for directory in directories:
        yield from _walk(storage, f"{folder}/{directory}", temporaries)


def _referenced(digests: list[str]) -> set[str]:
    found: set[str] = set()
    for label, field in REFERENCES:
        model = apps.get_model(label)
        found.update(
            model._default_manager.filter(**{f"{field}__in": digests}).values_list(field, flat=True)
        )
    return found


def _older_than(storage: Storage, name: str, cutoff: datetime.datetime) -> bool:
    try:
        return storage.get_modified_time(name) < cutoff
    except (FileNotFoundError, NotImplementedError):
        return False


def blobs_sweep(
    *,
    grace: datetime.timedelta | None = None,
    chunk: int = 500,
    now: datetime.datetime | None = None,
) -> int:
    """Delete blobs no row names and older than ``grace`` (``BLOB_SWEEP_GRACE_HOURS``);
    returns how many. Safe to run beside writers (see the module docstring) and twice at
    once; a run stopped midway simply leaves the rest for the next.

    Each chunk of listed blobs costs one query for the rows naming them; only the blobs
    none names (orphans, rare) are then asked their age and checked again under the lock.
    Named blobs cost no request to the store and never take the lock."""
    if grace is None:
        grace = datetime.timedelta(hours=settings.BLOB_SWEEP_GRACE_HOURS)
    cutoff = (now or timezone.now()) - grace
    storage = blob_storage()
    deleted = 0
    pending: list[tuple[str, datetime.datetime | None]] = []

    def sweep(listed: list[tuple[str, datetime.datetime | None]]) -> int:
        # Unnamed and old outside the lock first (cheap), then both again under it.
        referenced = _referenced([digest for digest, _modified in listed])
        candidates = [
            digest
            for digest, modified in listed
            if digest not in referenced
            and (
                modified < cutoff
                if modified is not None
                else _older_than(storage, blob_name(digest), cutoff)
            )
        ]
        if not candidates:
            return 0
        gone = 0
        with transaction.atomic():
            _lock(shared=False)
            referenced = _referenced(candidates)
            for digest in candidates:
                if digest in referenced:
                    continue
                name = blob_name(digest)
                if _older_than(storage, name, cutoff):
                    storage.delete(name)
                    gone += 1
        return gone

    temporaries: list[str] = []
    for listed in _walk(storage, PREFIX, temporaries):
        pending.append(listed)
        if len(pending) >= chunk:
            deleted += sweep(pending)
            pending = []
    if pending:
        deleted += sweep(pending)
    # A write a crash interrupted: no row can name a temporary file; one still being
    # written is younger than the grace period.
    for name in temporaries:
        if _older_than(storage, name, cutoff):
            with contextlib.suppress(FileNotFoundError):
                storage.delete(name)
            deleted += 1
    if deleted:
        logger.info("blob sweep: deleted %s unreferenced blobs", deleted)
    return deleted
