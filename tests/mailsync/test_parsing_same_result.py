"""The parser's shortcuts (remembered header objects, MIME-structural headers answered from
their raw value, one walk over the parts) must give exactly what plain policy.default parsing
gives: the reference below is ``message_parse`` as it was before those shortcuts, kept here
unchanged (it reuses only the pure string helpers of ``mailsync.parsing``)."""

from __future__ import annotations

import datetime
import email
import hashlib
import os
import sys
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailsync import parsing
from mailsync.parsing import (
    ParsedAttachment,
    ParsedMessage,
    _clean,
    _file_name,
    _html_to_text,
    _ids,
    _normalized,
    _raw_header,
    _received_date,
    _sender_name,
    bytes_decode,
    header_decode,
    message_key,
    message_parse,
    normalize_message_id,
    safe_filename,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PORTAL_SHARED_DIR", REPO.parent / "shared"))
CORPUS = SHARED / "conformance" / "mime"
BENCH_MESSAGES = 300


# --- the reference: message_parse before the shortcuts, on policy.default -----------------


def _reference_text_header(msg: EmailMessage, name: str, errors: list[str]) -> str:
    try:
        value = msg.get(name)
        return "" if value is None else _clean(" ".join(str(value).split()))
    except Exception as exc:
        errors.append(f"{name}: {exc}")
        raw = _raw_header(msg, name)
        return _clean(" ".join(raw[0].split())) if raw else ""


def _reference_header_date(msg: EmailMessage, errors: list[str]):
    try:
        header = msg.get("Date")
        date = getattr(header, "datetime", None) if header is not None else None
    except Exception as exc:
        errors.append(f"Date: {exc}")
        return None
    if date is not None and date.tzinfo is None:
        date = date.replace(tzinfo=datetime.UTC)
    return date


def _reference_addresses(msg: EmailMessage, name: str, errors: list[str]) -> list:
    try:
        header = msg.get(name)
        if header is None:
            return []
        return [
            (_clean(str(addr.display_name)), _clean(addr.addr_spec))
            for addr in getattr(header, "addresses", ())
        ]
    except Exception as exc:
        errors.append(f"{name}: {exc}")
        return [
            (_clean(display), _clean(addr))
            for display, addr in email.utils.getaddresses(_raw_header(msg, name))
        ]


def _reference_address_list(msg: EmailMessage, name: str, errors: list[str]) -> list[str]:
    seen: list[str] = []
    for _display, addr in _reference_addresses(msg, name, errors):
        normal = _normalized(addr)
        if normal and normal not in seen:
            seen.append(normal)
    return seen


def _reference_body_and_attachments(msg: EmailMessage, parsed: ParsedMessage) -> None:
    body_part = None
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
        if body_part is not None:
            data = body_part.get_payload(decode=True)
            charset = body_part.get_content_charset()
            if charset is None and body_part.get_content_subtype() == "html":
                meta = parsing._META_CHARSET.search(data[:2048])
                charset = meta.group(1).decode("ascii") if meta else None
            content, problem = bytes_decode(data, charset)
            if problem:
                parsed.errors.append(f"body: {problem}")
            if body_part.get_content_subtype() == "html":
                content = _html_to_text(content)
            parsed.text = _clean(content)
    except Exception as exc:
        parsed.errors.append(f"body: {exc}")
    try:
        parts = list(msg.walk())
    except Exception as exc:
        parsed.errors.append(f"structure: {exc}")
        return
    for part in parts:
        if part is body_part or part.is_multipart():
            continue
        try:
            disposition = part.get_content_disposition()
            filename = _file_name(part)
            content_type = part.get_content_type()
            if disposition != "attachment" and not filename:
                continue
            if content_type == "message/rfc822" or part.get_content_maintype() == "message":
                payload = part.as_bytes(policy=part.policy.clone(refold_source="none"))
            else:
                payload = part.get_payload(decode=True)
            if payload is None:
                continue
            inline_image = (
                part.get_content_maintype() == "image"
                and disposition != "attachment"
                and bool(part.get("Content-ID"))
            )
            parsed.attachments.append(
                ParsedAttachment(
                    filename=safe_filename(filename, content_type),
                    content_type=content_type[:127],
                    content=payload,
                    inline_image=inline_image,
                )
            )
        except Exception as exc:
            parsed.errors.append(f"attachment: {exc}")


def reference_parse(raw: bytes) -> ParsedMessage:
    errors: list[str] = []
    try:
        msg = email.message_from_bytes(raw, policy=policy.default)
    except Exception as exc:
        return ParsedMessage(
            key=hashlib.sha256(b"raw:" + raw).hexdigest(), errors=[f"message: {exc}"]
        )
    message_id = normalize_message_id(_reference_text_header(msg, "Message-ID", errors))[:900]
    parsed = ParsedMessage(key="", message_id=message_id, errors=errors)
    subject = _raw_header(msg, "Subject")
    if subject:
        text = header_decode(subject[0][: 4 * parsing.HEADER_MAX_CHARS])
        parsed.subject = _clean(" ".join(text.split()))[:2000]
    senders = _reference_addresses(msg, "From", errors)
    if senders:
        parsed.from_name = _sender_name(msg, senders[0][0])[:200]
        parsed.from_address = _normalized(senders[0][1])
    parsed.to = _reference_address_list(msg, "To", errors)
    parsed.cc = _reference_address_list(msg, "Cc", errors)
    parsed.reply_to = _reference_address_list(msg, "Reply-To", errors)
    parsed.in_reply_to = normalize_message_id(_reference_text_header(msg, "In-Reply-To", errors))
    parsed.references = _ids(_reference_text_header(msg, "References", errors))[:50]
    header_date = _reference_header_date(msg, errors)
    parsed.date, parsed.date_source = header_date, ""
    if header_date is None:
        parsed.date = _received_date(msg)
        parsed.date_source = "received" if parsed.date else "none"
    for defect in getattr(msg, "defects", [])[:5]:
        errors.append(f"defect: {type(defect).__name__}")
    _reference_body_and_attachments(msg, parsed)
    parsed.errors = [_clean(error) for error in parsed.errors]
    parsed.references = [_clean(ref) for ref in parsed.references]
    parsed.in_reply_to = _clean(parsed.in_reply_to)
    for attachment in parsed.attachments:
        attachment.content_type = _clean(attachment.content_type)
    message_key(parsed, header_date=header_date, raw=raw)
    return parsed


# --- the messages compared ----------------------------------------------------------------


def _part(content_type: str, disposition: str | None = None, body: str = "eA==") -> str:
    head = f"Content-Type: {content_type}\r\n"
    if disposition is not None:
        head += f"Content-Disposition: {disposition}\r\n"
    return f"--b\r\n{head}Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n"


# Structural headers on both sides of the shortcut's line: RFC 2231 and encoded-word file
# names, comments, quoted pairs, tabs and folds, a trailing ";", empty and odd values, bytes.
ODD_PARTS = [
    _part('application/pdf; name="a.pdf"', 'attachment; filename="b.pdf"'),
    _part("application/pdf; name=a.pdf;", "attachment;\tfilename=b.pdf ;"),
    _part('application/pdf; name="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="', "attachment"),
    _part("application/pdf", "attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf"),
    _part("application/pdf", "attachment; filename*0*=utf-8''a%C3%A9; filename*1=b.pdf"),
    _part("application/pdf", "attachment; filename*=\"utf-8''quoted%20ext.pdf\""),
    _part("application/pdf", 'attachment; filename="with \\"quote\\".pdf"'),
    _part("application/pdf", 'attachment (a comment); filename="c.pdf"'),
    _part("application/pdf", 'attachment; filename="=?iso-8859-1?Q?Gr=FC=DFe.pdf?="'),
    _part("application/pdf", "attachment; filename==?utf-8?b?w6TDtsO8LnBkZg==?="),
    _part("application/pdf", 'attachment; filename=""'),
    _part("application/pdf", "attachment; filename"),
    _part("application/pdf", ""),
    _part("application/pdf", "inline/odd; filename=d.pdf"),
    _part("application/pdf", "ATTACHMENT; FILENAME=E.PDF"),
    _part("application/pdf", 'attachment;\r\n\tfilename="folded.pdf"'),
    _part('text/plain; charset="utf-8" (comment)'),
    _part("text/plain; charset=us-ascii; format=flowed; delsp=yes"),
    _part("text/plain; charset='quoted'"),
    _part("text"),
    _part("text/plain/extra; name=x.txt", "attachment"),
    _part('text/plain; name="spaced name.txt"; charset=utf-8', "attachment"),
    _part(" application/octet-stream ;name=f.bin", " attachment ; filename = g.bin "),
    _part("image/png", "inline"),
    _part('application/x-\u00e9t\u00e9; name="\u00e9t\u00e9.bin"', "attachment"),
    _part("message/rfc822", "attachment", body="RnJvbTogYUB4LnRlc3QNCg0KaGk="),
]
ODD = (
    "From: a@x.test\r\nTo: b@y.test\r\nSubject: odd parts\r\nMessage-ID: <odd@x.test>\r\n"
    'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    + "".join(ODD_PARTS)
    + "--b--\r\n"
)

# Message-IDs, In-Reply-To, References and Date values on both sides of the plain-header
# shortcut: folds with tabs, comments, two ids, obsolete and quoted forms, encoded words,
# 8-bit bytes, control characters, odd and empty dates. (A value over HEADER_MAX_CHARS is
# cut on purpose, unlike policy.default: see the tests at the end.)
_ID_VALUES = [
    "<plain.id@host.test>",
    "<a!#$%&'*+/=?^_`{|}~-z@x.test>",
    " <leading-space@x.test>",
    "<trailing-space@x.test> ",
    "<one@x.test> <two@x.test>",
    "<with (comment)@x.test>",
    "(comment) <c@x.test>",
    '<"quoted local"@x.test>',
    "<dots..twice@x.test>",
    "<literal@[10.0.0.1]>",
    "<=?utf-8?q?enc?=@x.test>",
    "no-angle@x.test",
    "<unclosed@x.test",
    "",
    "<a\x01b@x.test>",
    "<caf\xe9@x.test>",
    "<folded@x.test>\r\n\t(after a fold)",
    "<root@x.test>\r\n\t<a0@x.test>\r\n <a1@x.test>",
    "=?utf-8?q?<encoded@x.test>?=",
]
_DATE_VALUES = [
    "Tue, 04 Mar 2025 09:15:00 +0100",
    "Tue, 04 Mar 2025 09:15:00 -0000",
    "4 Mar 2025 09:15 +0100 (CET)",
    "Tue,\r\n 04 Mar 2025\r\n\t09:15:00 +0100",
    "Tue, 04 Mar 25 09:15:00 EST",
    "Tue, 31 Feb 2025 09:15:00 +0100",
    "Tue, 04 Mar 2025 25:61:00 +0100",
    "yesterday-ish",
    "",
    "Tue, 04 Mar 2025 09:15:00 +\xe9100",
]
IDS_AND_DATES = [
    (
        f"From: a@x.test\r\nMessage-ID: {value}\r\nIn-Reply-To: {value}\r\n"
        f"References: {value}\r\nDate: {date}\r\nSubject: ids\r\n\r\nbody\r\n"
    ).encode("utf-8", "surrogateescape")
    for value, date in zip(
        _ID_VALUES, _DATE_VALUES * (len(_ID_VALUES) // len(_DATE_VALUES) + 1), strict=False
    )
] + [
    f"From: a@x.test\r\nDate: {date}\r\nSubject: dates\r\n\r\nbody\r\n".encode()
    for date in _DATE_VALUES
]

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
    # A multipart/related with a start parameter, the body not first.
    b"From: a@x.test\r\nSubject: related\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/related; boundary="r"; start="<second@x>"\r\n\r\n'
    b"--r\r\nContent-Type: text/plain\r\nContent-ID: <first@x>\r\n\r\nnot the body\r\n"
    b"--r\r\nContent-Type: text/html\r\nContent-ID: <second@x>\r\n\r\n<p>the body</p>\r\n"
    b"--r--\r\n",
    # Every part of it an edge of the structural-header shortcut; 8-bit bytes in one.
    ODD.encode("utf-8"),
    *IDS_AND_DATES,
]


def _corpus() -> list[Path]:
    files = sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []
    if not files:
        message = f"no conformance messages in {CORPUS} (set PORTAL_SHARED_DIR)"
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return files


@pytest.fixture(scope="module")
def bench_messages(tmp_path_factory) -> list[bytes]:
    """Messages as the sync benchmark generates them (text, HTML, inline logos, files)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import bench_mailsync
    finally:
        sys.path.remove(str(REPO / "bench"))
    maildir = tmp_path_factory.mktemp("bench-maildir")
    bench_mailsync.mailbox_fill(maildir, BENCH_MESSAGES, seed=3, uid=os.getuid(), gid=os.getgid())
    return [path.read_bytes() for path in sorted((maildir / "cur").iterdir())]


PARAMETER_NAMES = ("charset", "boundary", "name", "filename", "format", "start", "type", "x")


def _structural_answers(part: EmailMessage) -> tuple:
    """Everything the parser and the engine ask a part about its MIME-structural headers."""
    asks = [
        part.get_content_type,
        part.get_content_disposition,
        part.is_attachment,
        part.get_filename,
        part.get_boundary,
        part.get_content_charset,
    ]
    for name in PARAMETER_NAMES:
        for header in ("content-type", "Content-Disposition"):
            asks.append(lambda name=name, header=header: part.get_param(name, header=header))
            asks.append(
                lambda name=name, header=header: part.get_param(
                    name.upper(), "missing", header, unquote=False
                )
            )
    answers = []
    for ask in asks:
        try:
            answers.append(ask())
        except Exception as exc:
            answers.append(repr(exc))
    return tuple(answers)


def _all_structural_answers(raw: bytes, parse_policy: policy.EmailPolicy) -> list[tuple]:
    msg = email.message_from_bytes(raw, policy=parse_policy)
    return [(part.get_content_type(), _structural_answers(part)) for part in msg.walk()]


# --- the specification --------------------------------------------------------------------


@pytest.mark.parametrize("raw", MESSAGES)
def test_edge_messages_parse_like_policy_default(raw):
    assert message_parse(raw) == reference_parse(raw)


@pytest.mark.parametrize("path", _corpus(), ids=lambda path: path.name)
def test_conformance_messages_parse_like_policy_default(path):
    raw = path.read_bytes()

    assert message_parse(raw) == reference_parse(raw)


def test_benchmark_messages_parse_like_policy_default(bench_messages):
    assert len(bench_messages) == BENCH_MESSAGES
    for raw in bench_messages:
        assert message_parse(raw) == reference_parse(raw)


@pytest.mark.parametrize("raw", MESSAGES)
def test_parts_answer_structural_questions_like_policy_default(raw):
    assert _all_structural_answers(raw, parsing._policy()) == _all_structural_answers(
        raw, policy.default
    )


@pytest.mark.parametrize("path", _corpus(), ids=lambda path: path.name)
def test_conformance_parts_answer_structural_questions_like_policy_default(path):
    raw = path.read_bytes()

    assert _all_structural_answers(raw, parsing._policy()) == _all_structural_answers(
        raw, policy.default
    )


def _structural_values(raws: list[bytes]) -> list[tuple[str, str]]:
    values = set()
    for raw in raws:
        for part in email.message_from_bytes(raw, policy=policy.compat32).walk():
            for name, value in part.raw_items():
                if name.lower() in ("content-type", "content-disposition"):
                    values.add((name.lower(), "".join(str(value).splitlines())))
    return sorted(values)


def test_raw_values_the_shortcut_takes_get_policy_defaults_answers(bench_messages):
    raws = MESSAGES + [path.read_bytes() for path in _corpus()] + bench_messages
    taken = 0
    for name, value in _structural_values(raws):
        if parsing._plain_structural_value(name, value) is None:
            continue
        taken += 1
        source = f"{name}: {value}\r\n\r\n".encode()
        shortcut = email.message_from_bytes(source, policy=parsing._policy())
        reference = email.message_from_bytes(source, policy=policy.default)

        assert _structural_answers(shortcut) == _structural_answers(reference), value
    assert taken > 100  # the shortcut is the common case, not a corner


# --- runs of content lines fed to the parser as one line (parsing._collapse_runs) -------------

_TEXT = "Line one of the body.\nLine two, longer than the first one.\n\nAnother paragraph.\n" * 4
COLLAPSE_EDGES = [
    # Runs before a boundary (the last line ending belongs to it), in preamble and epilogue.
    (
        "From: a@x.test\nSubject: runs\nContent-Type: multipart/mixed; boundary=b\n\n"
        + _TEXT
        + "--b\nContent-Type: text/plain\n\n"
        + _TEXT
        + "\n\n--b\nContent-Type: application/pdf; name=a.pdf\n"
        + "Content-Transfer-Encoding: base64\n\n"
        + "QUJD" * 19
        + "\n" * 1
        + ("QUJD" * 19 + "\n") * 20
        + "--b--\n"
        + _TEXT
    ),
    # CRLF, and a lone CR before a "-" line and inside a run.
    (
        "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
        + _TEXT.replace("\n", "\r\n")
        + "text\rmore text with a lone CR in it, and longer than a line is\r\n" * 4
        + "tail\r--b\r\nContent-Type: text/html\r\n\r\n"
        + _TEXT.replace("\n", "\r\n")
        + "--b--"
    ),
    # A header block ended by a content line; a message/rfc822 part whose body has no header.
    (
        "From: a@x.test\nContent-Type: multipart/mixed; boundary=b\nnot a header line\n"
        + _TEXT
        + "--b\nContent-Type: message/rfc822\nnot a header either\n\nFrom: c@y.test\n"
        + "Subject: inside\n\n"
        + _TEXT
        + "--b\nContent-Type: message/rfc822\n\nFrom: d@y.test\n\n"
        + _TEXT
        + "--b--\n"
    ),
    # message/delivery-status: blank lines are structure there (parsed as it is).
    (
        "From: MAILER-DAEMON@x.test\nContent-Type: multipart/report; "
        "report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
        + _TEXT
        + "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.test\n"
        + "Original envelope text without a colon, long enough to be a run of lines\n"
        + "and another line of it\n\nFinal-Recipient: rfc822; b@y.test\nAction: failed\n"
        + "Status: 5.1.1\n\n--b--\n"
    ),
    (
        "From: a@x.test\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: =?us-ascii?q?message/delivery-status?=\n\nReporting-MTA: dns; x\n"
        + _TEXT
        + "\nAction: failed\n\n--b--\n"
    ),
    # The placeholder's own text in the message; a body with no final line ending.
    "From: a@x.test\n\n" + _TEXT + "\x00\x00mailsync-run-0\x00\n" + _TEXT,
    "From: a@x.test\nFrom here on: a header\n\n" + _TEXT + "no line ending at the end",
    # Runs that start with "From " or hold ":" are not content lines.
    "From: a@x.test\n\nFrom the desk of someone\n" + _TEXT + "Note: a colon\n" + _TEXT,
    # Dashes inside lines do not end a run; one at the start of a line (LF, CRLF, lone CR)
    # does.
    "From: a@x.test\n\n"
    + "A well-known, hyphen-rich line - with dashes -- inside it, long enough -\n" * 4
    + "- a line that starts with a dash\n"
    + _TEXT
    + "-\n"
    + _TEXT,
    "From: a@x.test\r\n\r\n"
    + "Text with a-dash and another - here, long enough to be a run of lines\r\n" * 4
    + "line\r- after a lone carriage return\r\n"
    + "and -- more\r\n" * 20
    + "\r\n-- \r\nA signature",
    # A NUL that is not the placeholder's.
    "From: a@x.test\n\n" + _TEXT + "a \x00 NUL inside a line\n" + _TEXT,
]


def _tree(msg: EmailMessage) -> list:
    return [
        (
            part.raw_items() and list(part.raw_items()),
            part._payload if isinstance(part._payload, str) else None,
            part.preamble,
            part.epilogue,
            [type(defect) for defect in part.defects],
            part.get_content_type(),
        )
        for part in msg.walk()
    ]


@pytest.mark.parametrize("text", COLLAPSE_EDGES)
def test_collapsed_runs_give_the_parsers_own_tree(text):
    raw = text.encode("utf-8")
    headers = parsing._RememberingHeaders()

    shortened = parsing._message_from_bytes(raw, parsing._policy(headers), headers)

    assert _tree(shortened) == _tree(email.message_from_bytes(raw, policy=policy.default))
    assert message_parse(raw) == reference_parse(raw)


def test_collapsing_takes_most_lines_of_the_benchmark_mail(bench_messages):
    lines = shortened = 0
    for raw in bench_messages:
        text = raw.decode("ascii", "surrogateescape")
        lines += text.count("\n")
        shortened += parsing._collapse_runs(text)[0].count("\n")
        headers = parsing._RememberingHeaders()
        tree = _tree(parsing._message_from_bytes(raw, parsing._policy(headers), headers))
        assert tree == _tree(email.message_from_bytes(raw, policy=policy.default))
    assert shortened < lines / 3


def test_a_message_nested_too_deeply_is_still_read_header_only(monkeypatch):
    monkeypatch.setattr(parsing, "MAX_MULTIPARTS", 10**6)  # reach the parser's own limit
    body = "Content-Type: text/plain\n\ninnermost\n"
    for level in range(1500):
        head = f'Content-Type: multipart/mixed; boundary="n{level}"\n\n'
        body = f"{head}--n{level}\n{body}\n--n{level}--\n"
    raw = f"From: a@x.test\nSubject: deep\nMessage-ID: <deep@x.test>\n{body}".encode()

    parsed = message_parse(raw)

    assert "structure: MIME parts nested too deeply: body not read" in parsed.errors
    assert parsed.subject == "deep" and parsed.message_id == "deep@x.test"


# Header values as they come: ASCII letters, the id punctuation, spaces, tabs, control
# characters, encoded-word starts and a few non-ASCII letters.
_HEADER_TEXT = st.text(
    alphabet=st.sampled_from(list('ab.@<>()"[]\\ \t=?!#%-_\x01\x7fé')), max_size=40
)


@given(value=_HEADER_TEXT, name=st.sampled_from(["Message-ID", "In-Reply-To", "References"]))
@example(value="<a.b@c.d>", name="Message-ID")
@example(value="<a!#%-_=b@c.d>", name="Message-ID")
@example(value="<a@b.c>\t(note)", name="Message-ID")
@example(value="<a@b.c>\t<d@e.f>", name="References")
def test_a_header_read_from_its_raw_value_says_what_policy_default_says(value, name):
    msg = EmailMessage(policy=policy.default)
    msg._headers.append((name, value))  # as the parser stores it: unparsed
    plain = parsing._plain_text_header(msg, name)
    if plain is not None:
        assert plain == str(msg.get(name))


@given(value=_HEADER_TEXT | st.sampled_from(["Tue, 04 Mar 2025 09:15:00 +0100", ""]))
def test_a_date_read_from_its_raw_value_is_policy_defaults_date(value):
    msg = EmailMessage(policy=policy.default)
    msg._headers.append(("Date", value))
    errors: list[str] = []
    try:
        expected = getattr(msg.get("Date"), "datetime", None)
    except Exception as exc:
        expected = f"Date: {exc}"
    date = parsing._header_date(msg, errors)
    if errors:
        assert errors == [expected]
    else:
        assert date == (
            expected.replace(tzinfo=datetime.UTC)
            if expected is not None and expected.tzinfo is None
            else expected
        )


@pytest.mark.parametrize("name", ["Date", "References", "Message-ID"])
def test_a_header_over_the_limit_is_still_cut_and_said_so(name):
    value = "<" + "long" * 5000 + "@x.test>" if name != "Date" else "Tue, 04 Mar 2025" + " " * 20000
    raw = f"From: a@x.test\r\n{name}: {value}\r\nSubject: long\r\n\r\nbody\r\n".encode()
    parsed = message_parse(raw)
    assert f"{name}: {len(value)} characters, only the first {parsing.HEADER_MAX_CHARS} read" in (
        parsed.errors
    )
