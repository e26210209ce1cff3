"""Every message of the shared tricky-MIME corpus syncs: none stops the run, each is kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailsync import services
from mailsync.engine import mailbox_sync
from mailsync.models import Message
from tests.factories import UserFactory
from tests.mailsync.factories import fernet_key  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PORTAL_SHARED_DIR", REPO.parent / "shared"))
CORPUS = SHARED / "conformance" / "mime"


def _corpus() -> list[Path]:
    files = sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []
    if not files:
        message = f"no conformance messages in {CORPUS} (set PORTAL_SHARED_DIR)"
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return files


@pytest.mark.django_db
def test_every_conformance_message_is_synced_and_kept(firm, mailbox_user, settings):
    settings.MAILSYNC_BATCH_SIZE = 10
    files = _corpus()
    appended = 0
    for path in files:
        raw = path.read_bytes()
        # IMAP stores CRLF lines; a bare-LF file is what a mail client would have converted.
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        mailbox_user.server.append(mailbox_user.name, raw)
        appended += 1
    connection = services.connection_create(
        firm=firm,
        owner=UserFactory(),
        kind="imap",
        email_address="corpus@firm.test",
        host=mailbox_user.server.host,
        port=mailbox_user.server.imap_port,
        security="none",
        username=mailbox_user.name,
        password=mailbox_user.password,
    )

    report = mailbox_sync(connection)

    assert report.state == "ok" and report.errors == 0
    assert report.fetched == appended
    # Some corpus files are the same message twice (same Message-ID): kept once, as a
    # source each; nothing is dropped.
    assert report.new + report.duplicates == appended
    assert connection.sources.count() == appended
    assert all(message.raw for message in Message.objects.all())
