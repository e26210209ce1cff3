"""Pop3Mailbox against a real Dovecot: stable UIDL identities, and nothing is ever deleted."""

from __future__ import annotations

import dataclasses

import pytest

from mailsync.adapters import Credentials, Pop3Mailbox
from mailsync.errors import SyncError


def test_it_keeps_uidl_stable_across_sessions(
    mailbox_user, pop3_settings, credentials, make_message
):
    for subject in ("one", "two", "three"):
        mailbox_user.server.append(mailbox_user.name, make_message(subject))

    with Pop3Mailbox(pop3_settings, credentials) as box:
        first = box.uidl()
    with Pop3Mailbox(pop3_settings, credentials) as box:
        second = box.uidl()

    assert len(first) == 3
    assert first == second


def test_it_leaves_retrieved_messages_on_the_server(
    mailbox_user, pop3_settings, credentials, make_message
):
    server = mailbox_user.server
    raw = make_message("keep me", "Line one\r\n.starts with a dot\r\nEnd")
    server.append(mailbox_user.name, raw)

    with Pop3Mailbox(pop3_settings, credentials) as box:
        [(uid, number)] = box.uidl().items()
        assert box.retrieve(number) == raw

    assert server.message_count(mailbox_user.name) == 1
    with Pop3Mailbox(pop3_settings, credentials) as box:
        assert box.uidl() == {uid: number}
        assert box.retrieve(number) == raw


def test_it_can_retrieve_without_marking_the_message_seen(
    mailbox_user, pop3_settings, credentials, make_message
):
    server = mailbox_user.server
    raw = make_message("peek", "Line one\r\n.dotted\r\nEnd")
    uid = server.append(mailbox_user.name, raw)

    with Pop3Mailbox(pop3_settings, credentials) as box:
        assert box.retrieve(1, peek=True) == raw

    assert "\\Seen" not in server.flags(mailbox_user.name, uid)


def test_it_reports_the_message_count_and_size(
    mailbox_user, pop3_settings, credentials, make_message
):
    raws = [make_message("a"), make_message("b", size=5000)]
    for raw in raws:
        mailbox_user.server.append(mailbox_user.name, raw)

    with Pop3Mailbox(pop3_settings, credentials) as box:
        assert box.stat() == (2, sum(len(raw) for raw in raws))


def test_it_retrieves_lines_longer_than_poplibs_limit(
    mailbox_user, pop3_settings, credentials, make_message
):
    raw = make_message("unwrapped html", "<p>" + "x" * 10_000 + "</p>")
    mailbox_user.server.append(mailbox_user.name, raw)

    with Pop3Mailbox(pop3_settings, credentials) as box:
        assert box.retrieve(1) == raw


def test_it_connects_over_implicit_tls(mailbox_user, pop3_settings, credentials):
    server = mailbox_user.server
    settings = dataclasses.replace(
        pop3_settings, port=server.pop3s_port, security="ssl", ca_file=server.ca_file
    )

    with Pop3Mailbox(settings, credentials) as box:
        assert box.client.sock.version().startswith("TLS")
        assert box.stat() == (0, 0)


def test_it_upgrades_with_stls(mailbox_user, pop3_settings, credentials):
    settings = dataclasses.replace(
        pop3_settings, security="starttls", ca_file=mailbox_user.server.ca_file
    )

    with Pop3Mailbox(settings, credentials) as box:
        assert box.client.sock.version().startswith("TLS")
        assert box.uidl() == {}


def test_it_refuses_a_wrong_password_as_auth_failed(mailbox_user, pop3_settings):
    with (
        pytest.raises(SyncError) as refused,
        Pop3Mailbox(pop3_settings, Credentials(password="not-the-password")),
    ):
        pass

    assert (refused.value.code, refused.value.step) == ("sync.auth_failed", "login")
    assert "[AUTH] Authentication failed" in refused.value.detail
    assert not refused.value.transient
