"""ImapMailbox against a real Dovecot: read-only, exact bytes, UID cursors, bounded memory."""

from __future__ import annotations

import dataclasses
import datetime
import gc
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsync.adapters import Credentials, ImapMailbox
from mailsync.adapters.imap import decode_folder_name, encode_folder_name
from mailsync.errors import FolderNotFound, SyncError, UidValidityChanged


def test_it_lists_selectable_folders_with_decoded_names(mailbox_user, imap_settings, credentials):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, "Sent Items")
    server.create_folder(mailbox_user.name, encode_folder_name("Été"))
    server.create_folder(mailbox_user.name, "Archive.2024")  # makes "Archive" \Noselect

    with ImapMailbox(imap_settings, credentials) as box:
        folders = box.list_folders()

    assert folders == ["INBOX", "Archive.2024", "Sent Items", "Été"]


@given(st.text(max_size=30))
def test_it_round_trips_folder_names_through_modified_utf7(name):
    encoded = encode_folder_name(name)
    assert encoded.isascii()
    assert decode_folder_name(encoded.encode()) == name


def test_it_reports_uidvalidity_uidnext_and_message_count(
    mailbox_user, imap_settings, credentials, make_message
):
    server = mailbox_user.server
    server.append(mailbox_user.name, make_message("one"))
    last = server.append(mailbox_user.name, make_message("two"))

    with ImapMailbox(imap_settings, credentials) as box:
        status = box.status("INBOX")

    assert status.messages == 2
    assert status.uidnext == last + 1
    assert status.uidvalidity > 0
    # Dovecot offers CONDSTORE after login, so the cheap "anything changed?" value is there.
    assert status.highestmodseq is not None and status.highestmodseq > 0


def test_it_reads_the_status_of_a_folder_with_a_non_ascii_name(
    mailbox_user, imap_settings, credentials, make_message
):
    server = mailbox_user.server
    server.create_folder(mailbox_user.name, encode_folder_name("Clients - Ålesund & Co"))
    server.append(mailbox_user.name, make_message(), encode_folder_name("Clients - Ålesund & Co"))

    with ImapMailbox(imap_settings, credentials) as box:
        assert "Clients - Ålesund & Co" in box.list_folders()
        assert box.status("Clients - Ålesund & Co").messages == 1


def test_it_fetches_the_exact_raw_bytes(mailbox_user, imap_settings, credentials, make_message):
    raw = make_message("Invoice 2025-031", "Dear accountant,\r\n..dotted line\r\nBye")
    when = datetime.datetime(2025, 3, 3, 10, 0, tzinfo=datetime.UTC)
    uid = mailbox_user.server.append(mailbox_user.name, raw, date=when, flags="\\Flagged")

    with ImapMailbox(imap_settings, credentials) as box:
        [fetched] = list(box.fetch("INBOX", [uid]))

    assert fetched.uid == uid
    assert fetched.raw == raw
    assert fetched.size == len(raw)
    assert fetched.internaldate == when
    assert "\\Flagged" in fetched.flags
    assert not fetched.truncated


def test_it_leaves_fetched_messages_unseen(mailbox_user, imap_settings, credentials, make_message):
    server = mailbox_user.server
    uid = server.append(mailbox_user.name, make_message())

    with ImapMailbox(imap_settings, credentials) as box:
        assert len(list(box.fetch("INBOX", [uid]))) == 1

    # A second, independent session sees the message exactly as before.
    assert "\\Seen" not in server.flags(mailbox_user.name, uid)


def test_it_finds_only_uids_after_the_cursor(
    mailbox_user, imap_settings, credentials, make_message
):
    server = mailbox_user.server
    uids = [server.append(mailbox_user.name, make_message(f"m{i}")) for i in range(4)]

    with ImapMailbox(imap_settings, credentials) as box:
        after_second = box.fetch_uids_since("INBOX", uids[1])
        up_to_date = box.fetch_uids_since("INBOX", uids[-1])
        from_start = box.fetch_uids_since("INBOX", 0)

    assert after_second == uids[2:]
    # "UID n:*" matches the last message even when n is past it; the adapter filters it.
    assert up_to_date == []
    assert from_start == uids


def test_it_finds_uids_since_a_date(mailbox_user, imap_settings, credentials, make_message):
    server = mailbox_user.server
    old = datetime.datetime(2024, 1, 5, 12, 0, tzinfo=datetime.UTC)
    new = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
    server.append(mailbox_user.name, make_message("old"), date=old)
    recent = server.append(mailbox_user.name, make_message("new"), date=new)

    with ImapMailbox(imap_settings, credentials) as box:
        found = box.fetch_uids_since("INBOX", 0, since_date=datetime.date(2025, 1, 1))

    assert found == [recent]


def test_it_sees_a_uidvalidity_change(mailbox_user, imap_settings, credentials, make_message):
    server = mailbox_user.server
    server.append(mailbox_user.name, make_message())
    with ImapMailbox(imap_settings, credentials) as box:
        before = box.status("INBOX").uidvalidity

    server.set_uidvalidity(mailbox_user.name, "INBOX", before + 1000)

    with ImapMailbox(imap_settings, credentials) as box:
        assert box.status("INBOX").uidvalidity == before + 1000


def test_it_refuses_uids_of_an_old_uidvalidity(
    mailbox_user, imap_settings, credentials, make_message
):
    server = mailbox_user.server
    uid = server.append(mailbox_user.name, make_message())
    with ImapMailbox(imap_settings, credentials) as box:
        cursor = box.status("INBOX").uidvalidity
    server.set_uidvalidity(mailbox_user.name, "INBOX", cursor + 7)

    with ImapMailbox(imap_settings, credentials) as box:
        with pytest.raises(UidValidityChanged) as changed:
            box.fetch_uids_since("INBOX", 0, uidvalidity=cursor)
        with pytest.raises(UidValidityChanged):
            list(box.fetch("INBOX", [uid], uidvalidity=cursor))

    assert (changed.value.expected, changed.value.actual) == (cursor, cursor + 7)


def test_it_fetches_a_20_mb_message_fully(mailbox_user, imap_settings, credentials, make_message):
    server = mailbox_user.server
    big = make_message("scanned ledger", size=20 * 1024 * 1024)
    small = server.append(mailbox_user.name, make_message("small"))
    big_uid = server.append(mailbox_user.name, big)

    with ImapMailbox(imap_settings, credentials, batch_bytes=1024 * 1024) as box:
        fetched = list(box.fetch("INBOX", [small, big_uid]))

    assert [message.uid for message in fetched] == [small, big_uid]
    assert fetched[1].size == len(big)
    assert fetched[1].raw == big


def test_it_keeps_memory_bounded_by_the_batch_size(
    mailbox_user, imap_settings, credentials, make_message
):
    server = mailbox_user.server
    one_mb = 1024 * 1024
    uids = [server.append(mailbox_user.name, make_message(f"m{i}", size=one_mb)) for i in range(8)]

    with ImapMailbox(imap_settings, credentials, batch_bytes=2 * one_mb) as box:
        gc.collect()
        tracemalloc.start()
        try:
            sizes = [len(message.raw) for message in box.fetch("INBOX", uids)]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert len(sizes) == 8 and min(sizes) >= one_mb
    # 8 MB went through; at most one 2 MB batch (plus imaplib's read buffers) was held.
    assert peak < 5 * one_mb


def test_it_gives_only_the_header_of_a_message_over_max_size(
    mailbox_user, imap_settings, credentials, make_message
):
    server = mailbox_user.server
    raw = make_message("huge attachment", size=300_000)
    uid = server.append(mailbox_user.name, raw)

    with ImapMailbox(imap_settings, credentials) as box:
        [fetched] = list(box.fetch("INBOX", [uid], max_size=100_000))

    assert fetched.truncated
    assert fetched.size == len(raw)
    assert fetched.raw == raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def test_it_skips_uids_that_no_longer_exist(mailbox_user, imap_settings, credentials, make_message):
    uid = mailbox_user.server.append(mailbox_user.name, make_message())

    with ImapMailbox(imap_settings, credentials) as box:
        fetched = [message.uid for message in box.fetch("INBOX", [uid, uid + 50])]

    assert fetched == [uid]


def test_it_reports_a_missing_folder(mailbox_user, imap_settings, credentials):
    with ImapMailbox(imap_settings, credentials) as box, pytest.raises(FolderNotFound) as missing:
        box.status("Deleted Folder")

    assert missing.value.folder == "Deleted Folder"
    assert "exist" in missing.value.detail


def test_it_logs_in_with_an_xoauth2_token(mailbox_user, imap_settings):
    mailbox_user.server.add_oauth_token(mailbox_user.name, "ya29.test-token-for-imap")

    with ImapMailbox(imap_settings, Credentials(access_token="ya29.test-token-for-imap")) as box:
        assert "INBOX" in box.list_folders()


def test_it_refuses_an_unknown_xoauth2_token_without_echoing_it(mailbox_user, imap_settings):
    with (
        pytest.raises(SyncError) as refused,
        ImapMailbox(imap_settings, Credentials(access_token="ya29.revoked-token")),
    ):
        pass

    assert refused.value.code == "sync.auth_failed"
    assert refused.value.step == "login"
    assert "revoked-token" not in str(refused.value)


def test_it_connects_over_implicit_tls_verifying_the_certificate(
    mailbox_user, imap_settings, credentials
):
    server = mailbox_user.server
    settings = dataclasses.replace(
        imap_settings, port=server.imaps_port, security="ssl", ca_file=server.ca_file
    )

    with ImapMailbox(settings, credentials) as box:
        assert box.client.sock.version().startswith("TLS")
        assert "INBOX" in box.list_folders()


def test_it_upgrades_with_starttls(mailbox_user, imap_settings, credentials):
    settings = dataclasses.replace(
        imap_settings, security="starttls", ca_file=mailbox_user.server.ca_file
    )

    with ImapMailbox(settings, credentials) as box:
        assert box.client.sock.version().startswith("TLS")
        assert "INBOX" in box.list_folders()


def test_it_refuses_an_untrusted_certificate(mailbox_user, imap_settings, credentials):
    settings = dataclasses.replace(
        imap_settings, port=mailbox_user.server.imaps_port, security="ssl"
    )

    with pytest.raises(SyncError) as refused, ImapMailbox(settings, credentials):
        pass

    assert (refused.value.code, refused.value.step) == ("sync.server_settings", "tls")
    assert "certificate verify failed" in refused.value.detail
