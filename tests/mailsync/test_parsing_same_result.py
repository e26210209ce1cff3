"""The parser remembers each parsed header within a message; it must give exactly what
policy.default parsing every header afresh gives."""

from __future__ import annotations

from email import policy

import pytest

from mailsync import parsing
from mailsync.parsing import message_parse

MESSAGES = [
    # Addresses with encoded display names, a Cc list, a reply.
    (
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <J.Mueller@Muellerhaus.test>\r\n"
        'To: "Dana, Reed" <dana@alder.test>, ola@nordictimber.test\r\n'
        "Cc: Zo\u00eb <zoe@bluedoor.test>\r\nReply-To: billing@alder.test\r\n"
        "Subject: =?utf-8?q?Receipts_=E2=80=93_caf=C3=A9?=\r\n"
        "Message-ID: <a1@muellerhaus.test>\r\nIn-Reply-To: <a0@alder.test>\r\n"
        "References: <root@alder.test> <a0@alder.test>\r\n"
        "Date: Tue, 04 Mar 2025 09:15:00 +0100\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        '--m\r\nContent-Type: multipart/related; boundary="r"\r\n\r\n'
        '--r\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
        "--a\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nHall=C3=B6 there\r\n"
        "--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hall\u00f6</p>\r\n--a--\r\n"
        "--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
        "Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "iVBORw0KGgo=\r\n--r--\r\n"
        '--m\r\nContent-Type: application/pdf; name="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="\r\n'
        "Content-Disposition: attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--m--\r\n"
    ).encode(),
    # Broken headers and MIME.
    b"From: =?utf-8?q?broken <\r\nTo: ,,,@@@\r\nSubject: =?x-unknown?b?////?=\r\n"
    b'Date: yesterday-ish\r\nContent-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
    b"--never-closed\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
    # No Message-ID, the same header twice, HTML only.
    b"From: a@x.test\r\nTo: b@y.test\r\nTo: c@z.test\r\nSubject: Hi\r\n"
    b"Content-Type: text/html\r\n\r\n<html><style>p{}</style><p>Hello &amp; bye</p></html>\r\n",
]


@pytest.mark.parametrize("raw", MESSAGES)
def test_remembered_headers_parse_like_policy_default(raw, monkeypatch):
    remembered = message_parse(raw)
    monkeypatch.setattr(parsing, "_policy", lambda: policy.default)

    assert remembered == message_parse(raw)
