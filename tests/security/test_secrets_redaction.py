"""A submitted mailbox password never reaches problem details, pages or logs, in any of the
escaped forms a server or a library may echo it in.

The servers here are real TCP servers on loopback that echo what the client sent in their
refusal (as some IMAP and SMTP servers do); Test account and sync run against them.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from django.urls import reverse

from mailsync import crypto
from mailsync.engine import mailbox_sync
from mailsync.errors import clean_reply, secret_variants
from tests.mailsync.factories import MailboxConnectionFactory

PASSWORDS = ['pa"ss\\word-7731', "plain-secret-7731", 'x"\\"y 7731 ünï', "a'b\"c\\d<7731>&"]


class EchoServer:
    """IMAP or SMTP on loopback that refuses every login, quoting the client's line back."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            try:
                if self.protocol == "imap":
                    self._imap(conn, lines)
                else:
                    self._smtp(conn, lines)
            except OSError:
                pass

    def _imap(self, conn, lines) -> None:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        for line in lines:
            tag, _sp, rest = line.rstrip(b"\r\n").partition(b" ")
            if rest.upper().startswith(b"CAPABILITY"):
                conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
            elif rest.upper().startswith(b"LOGOUT"):
                conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                return
            else:
                conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] refused: " + rest + b"\r\n")

    def _smtp(self, conn, lines) -> None:
        conn.sendall(b"220 echo ESMTP\r\n")
        for line in lines:
            command = line.rstrip(b"\r\n")
            upper = command.upper()
            if upper.startswith((b"EHLO", b"HELO")):
                conn.sendall(b"250-echo\r\n250 AUTH PLAIN LOGIN\r\n")
            elif upper.startswith(b"QUIT"):
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"535 5.7.8 refused: " + command + b"\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def imap_echo() -> Iterator[EchoServer]:
    server = EchoServer("imap")
    yield server
    server.close()


@pytest.fixture
def smtp_echo() -> Iterator[EchoServer]:
    server = EchoServer("smtp")
    yield server
    server.close()


def _escaped_forms(password: str, user: str = "ann@alder.test") -> list[str]:
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    plain = b"\0" + user.encode() + b"\0" + password.encode()
    return [
        password,
        quoted,
        repr(password)[1:-1],
        repr(quoted.encode())[2:-1],
        json.dumps(password)[1:-1],
        html.escape(password),
        html.escape(quoted),
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(plain).decode(),
    ]


def _leaks(text: str, password: str, user: str = "ann@alder.test") -> list[str]:
    return [form for form in _escaped_forms(password, user) if form in text]


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_escaped_form_is_redacted_from_a_reply(password):
    for form in _escaped_forms(password):
        text = clean_reply(f"NO refused: {form} (and more)", [password])
        assert _leaks(text, password) == [], form
        assert "[redacted]" in text


def test_short_forms_are_not_redacted_so_ordinary_words_survive():
    assert all(len(form) >= 3 for form in secret_variants("ab"))
    assert clean_reply("NO login failed", ["ab"]) == "NO login failed"


@pytest.mark.parametrize("password", PASSWORDS)
def test_test_account_never_shows_the_echoed_password(
    owner_client, imap_echo, smtp_echo, password, caplog
):
    caplog.set_level(logging.DEBUG)
    data = {
        "preset": "",
        "kind": "imap",
        "email_address": "ann@alder.test",
        "host": "127.0.0.1",
        "port": imap_echo.port,
        "security": "none",
        "username": "ann@alder.test",
        "password": password,
        "smtp_host": "",
        "action": "test",
    }

    page = owner_client.post(reverse("mailsync:credentials"), data).content.decode()

    assert "refused" in page  # the server's reply is shown...
    assert _leaks(page, password) == []  # ...without the password in any form
    assert _leaks(caplog.text, password) == []


def test_the_smtp_step_never_shows_an_echoed_auth_plain(
    owner_client, mailbox_user, smtp_echo, caplog
):
    caplog.set_level(logging.DEBUG)
    # Dovecot accepts the real password; the SMTP server echoes the AUTH PLAIN blob of it.
    data = {
        "preset": "",
        "kind": "imap",
        "email_address": f"{mailbox_user.name}@alder.test",
        "host": "127.0.0.1",
        "port": mailbox_user.server.imap_port,
        "security": "none",
        "username": mailbox_user.name,
        "password": mailbox_user.password,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_echo.port,
        "smtp_security": "none",
        "action": "test",
    }

    page = owner_client.post(reverse("mailsync:credentials"), data).content.decode()

    assert "535" in page
    assert _leaks(page, mailbox_user.password, mailbox_user.name) == []
    assert _leaks(caplog.text, mailbox_user.password, mailbox_user.name) == []


@pytest.mark.parametrize("password", PASSWORDS)
def test_sync_stores_no_echoed_password_in_the_problem_detail(
    firm, owner, imap_echo, password, fernet_key, caplog
):
    caplog.set_level(logging.DEBUG)
    connection = MailboxConnectionFactory(
        firm=firm,
        owner=owner.user,
        port=imap_echo.port,
        username="ann@alder.test",
        secret=crypto.encrypt(password),
    )

    mailbox_sync(connection)

    connection.refresh_from_db()
    assert connection.problem_code == "sync.auth_failed"
    assert _leaks(connection.problem_detail, password) == []
    assert _leaks(caplog.text, password) == []
