"""Odd MIME read as a mainstream mail client shows it: charsets, attachment names, dates, and
bounded work on messages built to be expensive. Every fixture is written here."""

from __future__ import annotations

import datetime
import tracemalloc

import pytest

from mailsync import parsing
from mailsync.parsing import (
    HEADER_MAX_CHARS,
    MAX_MULTIPARTS,
    bytes_decode,
    charset_codec,
    message_parse,
)

ARRIVED = datetime.datetime(2025, 3, 5, 14, 30, tzinfo=datetime.UTC)


def _text_message(body: bytes, content_type: str, *, cte: str = "8bit") -> bytes:
    return (
        b"From: a@client.test\r\nTo: me@firm.test\r\nSubject: s\r\nMessage-ID: <c@client.test>\r\n"
        b"Date: Mon, 03 Mar 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        + f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + body
        + b"\r\n"
    )


# --- charsets ---------------------------------------------------------------------------

# (declared label, bytes as a mailer of that region writes them, what a client shows)
CLIENT_CHARSETS = [
    # Labelled gb2312, written with GBK's extra characters (镕 is not in GB 2312).
    ("gb2312", "朱镕基".encode("gbk"), "朱镕基"),
    # Labelled big5, with a Hong Kong supplement character.
    ("big5", "香港𨋢".encode("big5hkscs"), "香港𨋢"),
    # Labelled Latin-1, with windows-1252's euro sign and curly quotes.
    ("iso-8859-1", "€ “quoted”".encode("cp1252"), "€ “quoted”"),
    ("us-ascii", "Café".encode("cp1252"), "Café"),
    ("ks_c_5601-1987", "똠방각하".encode("cp949"), "똠방각하"),
    ("euc-kr", "똠방각하".encode("cp949"), "똠방각하"),
    # Labelled Shift_JIS, with a Windows (NEC) circled digit.
    ("shift_jis", "①番".encode("cp932"), "①番"),
    ("x-mac-roman", "Café".encode("mac_roman"), "Café"),
    ("windows-1251", "Счёт".encode("cp1251"), "Счёт"),
    ("koi8-r", "Счёт".encode("koi8_r"), "Счёт"),
    ("ISO_8859-2", "Łódź".encode("iso8859_2"), "Łódź"),
    ("iso-8859-9", "İstanbul".encode("cp1254"), "İstanbul"),
    ("utf-7", "Grüße".encode("utf-7"), "Grüße"),
]


@pytest.mark.parametrize(("label", "data", "shown"), CLIENT_CHARSETS)
def test_a_text_part_is_decoded_with_the_charset_a_mail_client_uses(label, data, shown):
    parsed = message_parse(_text_message(data, f"text/plain; charset={label}"))

    assert parsed.text.strip() == shown
    assert "\ufffd" not in parsed.text and not parsed.errors


def test_a_part_whose_declared_charset_fails_but_is_valid_utf8_is_utf8():
    text = "Zoë: €120"
    parsed = message_parse(_text_message(text.encode(), "text/plain; charset=iso-8859-8"))
    # ISO-8859-8 has no character at 0xC3 (the first byte of "ë" in UTF-8).
    assert parsed.text.strip() == text and not parsed.errors


def test_a_part_without_charset_is_utf8_when_valid_else_windows_1252():
    utf8 = message_parse(_text_message("Müller".encode(), "text/plain"))
    latin = message_parse(_text_message("Müller".encode("cp1252"), "text/plain"))

    assert utf8.text.strip() == latin.text.strip() == "Müller"


def test_an_unknown_charset_label_is_read_and_flagged():
    readable = message_parse(_text_message("Müller".encode(), "text/plain; charset=x-klingon"))
    guessed = message_parse(_text_message(b"M\xfcller", "text/plain; charset=x-klingon"))

    assert readable.text.strip() == "Müller" and not readable.errors
    assert guessed.text.strip() == "Müller"
    assert any("x-klingon" in error for error in guessed.errors)


def test_text_that_cannot_be_decoded_is_flagged_not_silently_garbled():
    parsed = message_parse(_text_message(b"\x82\xa0\xff\xfe broken", "text/plain; charset=euc-jp"))

    assert any("euc-jp" in error for error in parsed.errors)


def test_unknown_labels_have_no_codec_and_text_codecs_only():
    assert charset_codec("no-such-charset") is None
    assert charset_codec("rot13") is None  # a Python codec, but not a text encoding
    assert charset_codec(' "UTF-8" ') == "utf_8"
    assert bytes_decode(b"\x81\x8d", "windows-1252") == ("\x81\x8d", "")


# --- headers ----------------------------------------------------------------------------


def test_raw_8bit_headers_are_utf8_when_valid_else_windows_1252():
    utf8 = message_parse("From: Zoë <z@x.test>\r\nSubject: Grüße\r\n\r\nx\r\n".encode())
    latin = message_parse("From: Zoë <z@x.test>\r\nSubject: Grüße\r\n\r\nx\r\n".encode("cp1252"))

    assert (utf8.from_name, utf8.subject) == (latin.from_name, latin.subject) == ("Zoë", "Grüße")


def test_a_sender_name_in_a_client_charset_is_read_as_clients_read_it():
    # "镕" is GBK, not GB 2312: Python's gb2312 codec cannot read it, clients can.
    import base64

    word = base64.b64encode("朱镕基".encode("gbk")).decode()
    parsed = message_parse(f"From: =?gb2312?b?{word}?= <zhu@x.test>\r\n\r\nx\r\n".encode())

    assert parsed.from_name == "朱镕基"


def test_an_html_part_without_mime_charset_uses_its_meta_charset():
    html = '<html><head><meta charset="windows-1251"></head><p>Счёт</p></html>'
    parsed = message_parse(_text_message(html.encode("cp1251"), "text/html"))

    assert parsed.text.strip() == "Счёт"


def test_encoded_words_use_client_charsets_and_join_a_character_split_between_words():
    # "中文报表" in GBK labelled gb2312, its bytes split in the middle of a character.
    data = "中文报表".encode("gbk")
    import base64

    first, second = (base64.b64encode(half).decode() for half in (data[:3], data[3:]))
    raw = f"Subject: =?gb2312?b?{first}?=\r\n =?gb2312?b?{second}?=\r\n\r\nx\r\n".encode()

    assert message_parse(raw).subject == "中文报表"


# --- attachment names -------------------------------------------------------------------


def _with_file(headers: bytes) -> bytes:
    return (
        b"From: a@client.test\r\nMessage-ID: <f@client.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--b\r\n" + headers + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQ=\r\n--b--\r\n"
    )


ATTACHMENT_NAMES = [
    # RFC 2231 continuations, plain and with a charset, split inside a character.
    (
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0="Annual '
        b'accounts ";\r\n filename*1="2024.pdf"',
        "Annual accounts 2024.pdf",
    ),
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''%E6%96%87; filename*1*=%E4%BB%B6; filename*2=.pdf",
        "文件.pdf",
    ),
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;"
        b" filename*=iso-8859-1''Gr%FC%DFe.pdf",
        "Grüße.pdf",
    ),
    # An RFC 2231 charset nobody knows: UTF-8 when valid, else windows-1252.
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;"
        b" filename*=x-unknown''Caf%E9.pdf",
        "Café.pdf",
    ),
    # The RFC 2231 form wins over the plain fallback beside it (RFC 6266).
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;"
        b" filename=\"fallback.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9.pdf",
        "Résumé.pdf",
    ),
    # RFC 2047 encoded words inside a quoted filename, folded, and with spaces inside.
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        b' filename="=?utf-8?B?UsOpc3Vtw6kgZGUg?=\r\n =?utf-8?B?bGEgc29jacOpdMOpLnBkZg==?="',
        "Résumé de la société.pdf",
    ),
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;"
        b' filename="=?utf-8?Q?Rechnung Nr. 5.pdf?="',
        "Rechnung Nr. 5.pdf",
    ),
    # An unquoted encoded word with a client charset.
    (
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;"
        b" filename==?gb2312?B?1tDOxC5wZGY=?=",
        "中文.pdf",
    ),
    # Only name= on Content-Type, encoded; and raw 8-bit bytes.
    (b'Content-Type: application/pdf; name="=?windows-1252?Q?Gr=FC=DFe.pdf?="', "Grüße.pdf"),
    (
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="caf\xe9.pdf"',
        "café.pdf",
    ),
    (b"Content-Type: application/pdf; name*=utf-8''%E6%96%87.pdf", "文.pdf"),
]


@pytest.mark.parametrize(("headers", "name"), ATTACHMENT_NAMES)
def test_attachment_names_are_recovered_as_clients_show_them(headers, name):
    parsed = message_parse(_with_file(headers))

    assert [attachment.filename for attachment in parsed.attachments] == [name]


# --- dates ------------------------------------------------------------------------------

HEADER = (
    b"Received: from a.test by mx.firm.test; Mon, 03 Mar 2025 10:00:05 +0000\r\n"
    b"Received: from b.test by a.test; Mon, 03 Mar 2025 09:59:00 +0000\r\n"
    b"From: a@client.test\r\nSubject: s\r\n"
)


@pytest.mark.parametrize("date", [b"", b"Date: yesterday-ish\r\n"])
def test_a_missing_or_unreadable_date_is_the_servers_arrival_time_flagged(date):
    parsed = message_parse(HEADER + date + b"\r\nx\r\n", internaldate=ARRIVED)

    assert (parsed.date, parsed.date_source) == (ARRIVED, "server")


def test_without_arrival_time_the_newest_received_date_is_used_flagged():
    parsed = message_parse(HEADER + b"\r\nx\r\n")

    assert parsed.date == datetime.datetime(2025, 3, 3, 10, 0, 5, tzinfo=datetime.UTC)
    assert parsed.date_source == "received"


def test_with_no_date_anywhere_the_date_stays_empty_never_now():
    parsed = message_parse(b"From: a@client.test\r\nSubject: s\r\n\r\nx\r\n")

    assert (parsed.date, parsed.date_source) == (None, "none")


def test_a_readable_date_is_the_messages_own():
    parsed = message_parse(
        HEADER + b"Date: Sun, 02 Mar 2025 08:00:00 +0100\r\n\r\nx\r\n", internaldate=ARRIVED
    )

    assert parsed.date == datetime.datetime(2025, 3, 2, 7, 0, tzinfo=datetime.UTC)
    assert parsed.date_source == ""


# --- the dedupe key ---------------------------------------------------------------------


def test_a_reused_message_id_on_another_message_gives_another_key():
    first = message_parse(b"From: s@x.test\r\nSubject: Scan 1\r\nMessage-ID: <same@x>\r\n\r\n1")
    second = message_parse(b"From: s@x.test\r\nSubject: Scan 2\r\nMessage-ID: <same@x>\r\n\r\n2")

    assert first.key != second.key


def test_a_copy_re_encoded_by_another_server_has_the_same_key():
    written = message_parse(
        "From: Zoë <Zoe@Bluedoor.test>\r\nSubject: Café  receipts\r\n"
        "Date: Tue, 4 Mar 2025 09:15:00 +0100\r\nMessage-ID: <r@x>\r\n\r\nhi\r\n".encode()
    )
    relayed = message_parse(
        b"Received: from relay by mx; Tue, 4 Mar 2025 08:16:00 +0000\r\n"
        b"From: =?iso-8859-1?q?Zo=EB?= <zoe@bluedoor.test>\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9?=\r\n receipts\r\n"
        b"Date: Tue, 04 Mar 2025 08:15:00 GMT\r\nMessage-ID: <r@x>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\naGkNCg==\r\n"
    )

    assert written.key == relayed.key


# --- bounded work -----------------------------------------------------------------------


def _peak_mb(raw: bytes):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        parsed = message_parse(raw)
        return parsed, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_a_huge_header_is_read_up_to_a_bound_and_flagged():
    # 130,000+ characters of encoded words: uncapped, the header parser needed ~450 MB.
    words = " ".join("=?utf-8?q?caf=C3=A9?=" for _ in range(6500))
    recipients = ", ".join(f"user{n}@client.test" for n in range(8000))
    raw = (
        f"From: a@client.test\r\nTo: {recipients}\r\nSubject: {words}\r\n"
        f"Keywords: {words}\r\nMessage-ID: <big@x>\r\n\r\nbody\r\n"
    ).encode()

    parsed, peak = _peak_mb(raw)

    assert peak < 40
    assert parsed.subject.startswith("cafécafé") and parsed.text.strip() == "body"
    assert 300 < len(parsed.to) < 8000
    assert any(f"first {HEADER_MAX_CHARS}" in error for error in parsed.errors)


def _nested(levels: int) -> bytes:
    body = "Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for level in range(levels):
        boundary = f"b{level}"
        body = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{body}\r\n--{boundary}--\r\n"
        )
    return f"From: a@client.test\r\nSubject: Deep\r\nMessage-ID: <deep@x>\r\n{body}".encode()


def test_more_multipart_sections_than_the_bound_keep_the_header_and_are_flagged():
    parsed = message_parse(_nested(MAX_MULTIPARTS + 1))

    assert (parsed.subject, parsed.from_address) == ("Deep", "a@client.test")
    assert f"structure: {MAX_MULTIPARTS + 1} multipart sections: body not read" in parsed.errors


def test_nesting_within_the_bound_is_read_to_the_innermost_part():
    parsed = message_parse(_nested(MAX_MULTIPARTS - 1))

    assert parsed.errors == [] and parsed.text.strip() == "innermost"


def test_parts_nested_too_deeply_keep_the_header_and_are_flagged(monkeypatch):
    monkeypatch.setattr(parsing, "MAX_MULTIPARTS", 10**6)  # reach the parser's own limit
    body = "Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for level in range(1500):
        boundary = f"b{level}"
        body = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{body}\r\n--{boundary}--\r\n"
        )
    raw = f"From: a@client.test\r\nSubject: Deep\r\nMessage-ID: <deep@x>\r\n{body}".encode()

    parsed, peak = _peak_mb(raw)

    assert (parsed.subject, parsed.from_address) == ("Deep", "a@client.test")
    assert any("nested too deeply" in error for error in parsed.errors)
    assert peak < 100


def test_thousands_of_parts_are_read_up_to_a_bound_and_flagged():
    part = (
        "--b\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="f.bin"\r\n\r\nx\r\n'
    )
    raw = (
        "From: a@client.test\r\nSubject: Many\r\nMessage-ID: <many@x>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + part * 3000 + "--b--\r\n"
    ).encode()

    parsed, peak = _peak_mb(raw)

    assert len(parsed.attachments) == 1000
    assert any("more than 1000 files" in error for error in parsed.errors)
    assert peak < 100


def test_the_migration_rekeys_stored_mail_as_the_parser_keys_it():
    import hashlib
    import importlib

    migration = importlib.import_module(
        "mailsync.migrations.0005_message_fingerprint_occurrence_date_source"
    )
    parsed = message_parse(
        "From: Zoë <Zoe@Bluedoor.test>\r\nSubject: Café  receipts\r\n"
        "Date: Tue, 4 Mar 2025 09:15:00 +0100\r\nMessage-ID: <r@x>\r\n\r\nhi\r\n".encode()
    )
    # What the migration reads: the stored columns.
    fingerprint = migration._fingerprint(parsed.date, parsed.from_address, parsed.subject)

    assert fingerprint == parsed.fingerprint
    assert hashlib.sha256(f"mid:r@x\n{fingerprint}".encode()).hexdigest() == parsed.key
