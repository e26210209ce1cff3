"""Big syncs parse their batches in a separate process; whatever happens to that process,
no batch is lost or parsed differently."""

from __future__ import annotations

import base64
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailsync import engine, services
from mailsync.engine import BatchParser, Fetched, SyncReport, mailbox_sync
from mailsync.models import Message, MessageClientLink, MessageSource
from mailsync.parsing import message_parse
from portal.blobs import blob_paths, blobs_put_many
from portal.models import Document
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, UserFactory
from tests.mailsync.factories import fernet_key  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def _mail(n: int, *, attachment: bytes | None = None) -> bytes:
    head = (
        f"From: Client <client@client.test>\r\nTo: me@firm.test\r\nSubject: Mail {n}\r\n"
        f"Message-ID: <m{n}@client.test>\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
    )
    if attachment is None:
        return (head + f"Content-Type: text/plain; charset=utf-8\r\n\r\nHello {n}.\r\n").encode()
    encoded = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (
        head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached {n}.\r\n"
        "--b1\r\nContent-Type: application/pdf\r\n"
        f'Content-Disposition: attachment; filename="f{n}.pdf"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b1--\r\n"
    ).encode()


BROKEN = (
    b"From: =?utf-8?q?broken <\r\nTo: ,,,@@@\r\nSubject: =?x-unknown?b?////?=\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
    b"--never-closed\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"
)


def _batch() -> list[Fetched]:
    return [
        Fetched(raw=_mail(1), internaldate=None, uid=1),
        Fetched(raw=_mail(2, attachment=b"%PDF-1.4 " * 500), internaldate=None, uid=2),
        Fetched(raw=BROKEN, internaldate=None, uid=3),
        Fetched(raw=_mail(4).split(b"\r\n\r\n")[0] + b"\r\n\r\n", internaldate=None, uid=4),
    ]


def _parsed_here(items: list[Fetched]) -> list:
    return [message_parse(item.raw, internaldate=item.internaldate) for item in items]


@pytest.fixture
def parser():
    parser = BatchParser(SyncReport())
    parser.expect(engine.PARSE_PROCESS_MIN_MESSAGES)
    assert parser.wait_ready(timeout=60)
    yield parser
    parser.close()


def _parse_processes() -> list[multiprocessing.Process]:
    return multiprocessing.active_children()


def test_the_parse_process_gives_what_parsing_here_gives(parser):
    items = _batch()

    parsed = parser.submit(items).result()

    assert parsed == _parsed_here(items)
    assert parsed[1].attachments[0].content == b"%PDF-1.4 " * 500
    assert parsed[2].errors  # malformed: flagged, still parsed


def _stored(items: list[Fetched]) -> list[Fetched]:
    """The items with their raw mail written to the blob store, as the sync writes it."""
    for item, ref in zip(items, blobs_put_many([item.raw for item in items]), strict=True):
        item.blob = ref
    return items


def test_the_parse_process_reads_stored_mail_from_the_blob_store(parser, monkeypatch):
    items = _stored(_batch())
    sent = []
    submit = parser._pool.submit
    monkeypatch.setattr(
        parser._pool, "submit", lambda fn, *args: sent.append(args) or submit(fn, *args)
    )

    parsed = parser.submit(items).result()

    assert parsed == _parsed_here(items)
    # only where each message is went to the process, not its bytes
    assert [path for path, _date in sent[0][0]] == blob_paths([item.blob for item in items])


def test_a_stored_message_whose_blob_file_is_gone_is_parsed_here(parser, caplog):
    items = _stored(_batch())
    os.remove(blob_paths([items[1].blob])[0])

    with caplog.at_level(logging.WARNING, logger="mailsync.engine"):
        parsed = parser.submit(items).result()

    assert parsed == _parsed_here(items)
    assert parsed[1].attachments[0].content == b"%PDF-1.4 " * 500
    assert "parse process failed" not in caplog.text  # the process is still in use
    assert parser.wait_ready(timeout=1)


def test_a_truncated_message_is_flagged_wherever_it_is_parsed(parser):
    items = [Fetched(raw=_mail(5).split(b"\r\n\r\n")[0], internaldate=None, truncated=True)]

    parsed = parser.submit(items).result()

    assert "message larger than the size limit: header kept only" in parsed[0].errors


def test_a_batch_whose_parse_process_was_killed_is_parsed_here(parser, caplog):
    for process in _parse_processes():
        os.kill(process.pid, signal.SIGKILL)
    items = _batch()

    with caplog.at_level(logging.WARNING, logger="mailsync.engine"):
        first = parser.submit(items).result()
        second = parser.submit(items[:1]).result()

    assert first == _parsed_here(items) and second == _parsed_here(items[:1])
    assert "parse process failed" in caplog.text


def test_small_runs_parse_without_a_process():
    parser = BatchParser(SyncReport())
    parser.expect(engine.PARSE_PROCESS_MIN_MESSAGES - 1)

    assert not parser.wait_ready(timeout=1)
    assert parser.submit(_batch()).result() == _parsed_here(_batch())


def test_the_parse_process_ends_when_its_sync_process_is_killed():
    script = (
        "import django, sys\n"
        "django.setup()\n"
        "from mailsync.engine import BatchParser, SyncReport, PARSE_PROCESS_MIN_MESSAGES\n"
        "import multiprocessing, time\n"
        "parser = BatchParser(SyncReport())\n"
        "parser.expect(PARSE_PROCESS_MIN_MESSAGES)\n"
        "assert parser.wait_ready(timeout=60)\n"
        "print(multiprocessing.active_children()[0].pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    sync = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        parse_pid = int(sync.stdout.readline())
        assert _running(parse_pid)
        sync.kill()
        sync.wait()
        deadline = time.monotonic() + 30
        while _running(parse_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(parse_pid)
    finally:
        sync.kill()
        sync.wait()
        sync.stdout.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child waiting for init to collect it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- whole syncs through the parse process ----------------------------------------------------


def _connect(firm, mailbox_user):
    return services.connection_create(
        firm=firm,
        owner=UserFactory(),
        kind="imap",
        email_address=f"{mailbox_user.name}@firm.test",
        host=mailbox_user.server.host,
        port=mailbox_user.server.imap_port,
        security="none",
        username=mailbox_user.name,
        password=mailbox_user.password,
    )


@pytest.fixture
def with_parse_process(monkeypatch, settings):
    """Every sync starts a parse process, and waits for it to be up (a real run parses here
    until then), so that these syncs surely go through it; small batches, so there are
    several."""
    monkeypatch.setattr(engine, "PARSE_PROCESS_MIN_MESSAGES", 1)
    settings.MAILSYNC_BATCH_SIZE = 2
    expect = BatchParser.expect

    def expect_and_wait(self: BatchParser, messages: int) -> None:
        expect(self, messages)
        assert self.wait_ready(timeout=60)

    monkeypatch.setattr(BatchParser, "expect", expect_and_wait)


@pytest.mark.django_db
def test_a_sync_keeps_every_message_when_its_parse_process_dies(
    firm, mailbox_user, with_parse_process, caplog
):
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="client@client.test")
    for n in range(10):
        attachment = b"%PDF-1.4 " * (50 + n) if n % 3 == 0 else None
        mailbox_user.server.append(mailbox_user.name, _mail(n, attachment=attachment))

    def kill_the_parse_process(folder: str, done: int, total: int) -> None:
        if done == 4:
            for process in _parse_processes():
                os.kill(process.pid, signal.SIGKILL)

    with caplog.at_level(logging.WARNING, logger="mailsync.engine"):
        report = mailbox_sync(_connect(firm, mailbox_user), on_batch=kill_the_parse_process)

    assert "parse process failed" in caplog.text  # the rest was parsed in the sync process
    assert (report.fetched, report.new, report.duplicates, report.state) == (10, 10, 0, "ok")
    assert Message.objects.count() == 10 and MessageSource.objects.count() == 10
    assert MessageClientLink.objects.filter(client=client).count() == 10
    assert Document.objects.filter(client=client).count() == 4
    assert not _parse_processes()  # ended with the run


class _Killed(Exception):
    pass


@pytest.mark.django_db
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing_with_a_parse_process(
    firm, mailbox_user, with_parse_process
):
    for n in range(7):
        mailbox_user.server.append(mailbox_user.name, _mail(n))
    connection = _connect(firm, mailbox_user)

    def kill_after_second_batch(folder: str, done: int, total: int) -> None:
        if done == 4:
            raise _Killed

    with pytest.raises(_Killed):
        mailbox_sync(connection, on_batch=kill_after_second_batch)
    assert Message.objects.count() == 4
    assert not _parse_processes()

    report = mailbox_sync(connection)

    assert (report.fetched, report.new, report.duplicates) == (3, 3, 0)
    assert Message.objects.count() == 7 and MessageSource.objects.count() == 7
