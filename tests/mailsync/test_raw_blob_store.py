"""Raw mail lives in the content-addressed blob store, never lost and never deleted while used."""

from __future__ import annotations

import datetime
import os
import threading
import time

import pytest
from django.db import connection as db
from django.db import connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from mailsync import engine
from mailsync.engine import mailbox_sync
from mailsync.models import Message
from portal.blobs import blob_name, blob_put, blob_read, blob_storage, blobs_confirm, blobs_sweep
from tests.mailsync.factories import MessageFactory, fernet_key  # noqa: F401
from tests.mailsync.test_engine import _connect, _mail


def _blob_path(sha256: str) -> str:
    return blob_storage().path(blob_name(sha256))


def _age(sha256: str, *, days: int = 3) -> None:
    """Make a blob look as old as a crash's orphan found by a later sweep."""
    past = time.time() - days * 86400
    os.utime(_blob_path(sha256), (past, past))


def _stored_blobs() -> set[str]:
    root = blob_storage().path("sha256")
    return {
        name
        for _folder, _dirs, files in os.walk(root)
        for name in files
        if not name.startswith(".")
    }


def _message_naming(firm, ref) -> Message:
    """A message row naming a blob written beforehand (as the sync and the sender do)."""
    return Message.objects.create(
        firm=firm, key=ref.sha256, thread_key="t", raw_sha256=ref.sha256, size=ref.size
    )


@pytest.mark.django_db
def test_a_synced_message_keeps_its_raw_mail_in_the_blob_store_not_in_its_row(firm, mailbox_user):
    raw = _mail("Kept", message_id="kept@c.test")
    mailbox_user.server.append(mailbox_user.name, raw)

    mailbox_sync(_connect(firm, mailbox_user))

    message = Message.objects.get()
    assert "raw" not in {field.name for field in Message._meta.concrete_fields}
    assert message.raw.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert message.size == len(message.raw)
    assert os.path.exists(_blob_path(message.raw_sha256))


@pytest.mark.django_db
def test_a_crash_between_blob_write_and_commit_leaves_no_row_and_the_sweep_removes_the_orphan(
    firm, mailbox_user, monkeypatch
):
    for n in range(3):
        mailbox_user.server.append(mailbox_user.name, _mail(f"M{n}", message_id=f"crash{n}@c"))
    connection = _connect(firm, mailbox_user)

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed after the blobs were written")

    monkeypatch.setattr(engine, "rows_insert", crash)  # the sources, after the messages
    with pytest.raises(RuntimeError):
        mailbox_sync(connection)

    assert not Message.objects.exists()
    orphans = _stored_blobs()
    assert len(orphans) == 3  # written first, as the rule says

    assert blobs_sweep() == 0  # younger than the grace period: maybe about to be named
    for sha256 in orphans:
        _age(sha256)
    assert blobs_sweep() == 3
    assert _stored_blobs() == set()


@pytest.mark.django_db
def test_deleting_one_of_two_messages_sharing_a_blob_leaves_the_other_readable(firm):
    raw = b"Subject: shared\r\n\r\nThe same bytes twice.\r\n"
    first = MessageFactory(firm=firm, raw=raw)
    second = MessageFactory(firm=firm, raw=raw)
    assert first.raw_sha256 == second.raw_sha256

    first.delete()
    _age(second.raw_sha256)
    blobs_sweep()

    assert Message.objects.get(pk=second.pk).raw == raw


@pytest.mark.django_db
def test_the_sweep_deletes_a_blob_once_its_last_message_is_gone(firm):
    message = MessageFactory(firm=firm, raw=b"Subject: alone\r\n\r\nOnly one.\r\n")
    sha256 = message.raw_sha256
    _age(sha256)
    assert blobs_sweep() == 0

    message.delete()

    assert blobs_sweep() == 1
    assert not os.path.exists(_blob_path(sha256))


@pytest.mark.django_db
def test_a_writer_reusing_an_orphan_the_sweep_deleted_writes_it_again(firm):
    raw = b"Subject: orphan\r\n\r\nLeft by a crash.\r\n"
    ref = blob_put(raw)
    _age(ref.sha256)
    reused = blob_put(raw)  # the writer finds the orphan...
    assert reused.existed
    blobs_sweep()  # ...which the sweep deletes before the writer commits

    with transaction.atomic():
        blobs_confirm([(reused, raw)])
        message = _message_naming(firm, reused)

    assert Message.objects.get(pk=message.pk).raw == raw


@pytest.mark.django_db(transaction=True)
def test_a_sweep_racing_a_writer_that_reuses_an_orphan_keeps_the_blob(firm):
    if db.vendor != "postgresql":
        pytest.skip("the sweep's lock needs PostgreSQL")
    raw = b"Subject: race\r\n\r\nReused while swept.\r\n"
    _age(blob_put(raw).sha256)
    reused = blob_put(raw)
    confirmed, release = threading.Event(), threading.Event()
    swept: list[int] = []

    def writer() -> None:
        try:
            with transaction.atomic():
                blobs_confirm([(reused, raw)])
                confirmed.set()
                release.wait(10)
                _message_naming(firm, reused)
        finally:
            connections.close_all()

    def sweeper() -> None:
        try:
            swept.append(blobs_sweep())
        finally:
            connections.close_all()

    writing = threading.Thread(target=writer)
    writing.start()
    assert confirmed.wait(10)
    sweeping = threading.Thread(target=sweeper)
    sweeping.start()
    time.sleep(0.5)  # the sweep now waits for the writer's transaction
    assert sweeping.is_alive()
    release.set()
    writing.join(10)
    sweeping.join(10)

    assert swept == [0]
    assert Message.objects.get().raw == raw


def _migrate(target: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(db)
    executor.loader.build_graph()
    executor.migrate(target)


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_existing_raw_mail_into_the_blob_store(firm):
    latest = MigrationExecutor(db).loader.graph.leaf_nodes("mailsync")
    _migrate([("mailsync", "0008_message_raw_sha256")])
    try:
        old_state = MigrationExecutor(db).loader.project_state(
            [("mailsync", "0008_message_raw_sha256")]
        )
        OldMessage = old_state.apps.get_model("mailsync", "Message")
        raws = [f"Subject: old {n}\r\n\r\nStored in the row.\r\n".encode() for n in range(5)]
        for n, raw in enumerate(raws):
            OldMessage.objects.create(
                firm_id=firm.pk, key=f"{n:064d}", thread_key="t", raw=raw, size=len(raw)
            )
        # A run stopped midway had already moved the first one.
        first = OldMessage.objects.order_by("pk").first()
        ref = blob_put(bytes(first.raw))
        OldMessage.objects.filter(pk=first.pk).update(raw_sha256=ref.sha256, raw=None)

        _migrate([("mailsync", "0009_message_raw_to_blob_store")])

        assert not OldMessage.objects.exclude(raw=None).exists()
        moved = sorted(OldMessage.objects.values_list("key", "raw_sha256"))
        assert [blob_read(sha256) for _key, sha256 in moved] == raws
    finally:
        _migrate([("mailsync", name) for _app, name in latest])


@pytest.mark.django_db
def test_a_disk_that_takes_no_blobs_delays_the_sync_without_blaming_the_mailbox(
    firm, mailbox_user, settings, tmp_path
):
    mailbox_user.server.append(mailbox_user.name, _mail("Later", message_id="disk@c.test"))
    connection = _connect(firm, mailbox_user)
    working = settings.STORAGES
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_bytes(b"")
    settings.STORAGES = {
        **working,
        "blobs": {**working["blobs"], "OPTIONS": {"location": str(not_a_folder / "blobs")}},
    }

    report = mailbox_sync(connection)

    connection.refresh_from_db()
    assert not Message.objects.exists()
    assert (connection.health, connection.problem_code) == ("ok", "")
    assert connection.next_attempt_at > timezone.now() + datetime.timedelta(minutes=3)
    assert "blob store" in report.problems[0]

    settings.STORAGES = working
    mailbox_sync(connection)

    assert Message.objects.get().subject == "Later"
