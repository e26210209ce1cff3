"""The bounce classifier's shortcuts read mail exactly as the slow way would (issue #12).

The fast MIME reader must build the tree ``email.message_from_bytes(policy=compat32)`` builds;
the literal prefilters must never skip a pattern that would have matched; the split MTA
header patterns must pick the family one alternation would. Pure Python, no database.
"""

from __future__ import annotations

import email
import re
from email import policy
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoicing.delivery.bounces import mime, mta, vocabulary
from invoicing.delivery.bounces.dsn import _delivery_status_text, parse_field_blocks

from .test_bounce_corpus import BOUNCES, BOUNCES_MORE, MIME, _require


def _corpus_files() -> list[Path]:
    files: list[Path] = []
    for directory in (BOUNCES / "messages", BOUNCES_MORE / "messages", MIME):
        if directory.exists():
            files.extend(sorted(p for p in directory.iterdir() if p.is_file()))
    return files


CORPUS = _corpus_files()


def _tree(msg: Message) -> tuple:
    """What the classifier reads of a message: headers, default type, payloads, nesting."""
    payload = msg._payload
    if msg.get_content_type() == "message/delivery-status":
        # Kept as field text by the fast reader; compare what the classifier reads from it.
        payload = parse_field_blocks(_delivery_status_text(msg))
    elif isinstance(payload, list):
        payload = [_tree(part) for part in payload]
    return (msg._headers, msg.get_unixfrom(), msg.get_default_type(), payload)


def _stdlib(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=policy.compat32)


def test_every_corpus_message_is_read_as_the_stdlib_reads_it() -> None:
    _require(BOUNCES)
    for path in CORPUS:
        raw = path.read_bytes()
        assert _tree(mime.message_from_bytes(raw)) == _tree(_stdlib(raw)), path.name


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["drop", "repeat", "cut", "blank", "unterminate", "insert", "lf"]),
        st.floats(min_value=0, max_value=1),
        st.sampled_from([b"--\n", b" x\n", b"Foo: bar\r\n", b"From x\n", b"\r\n", b"x\xff\n"]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(min_value=0), mutations=MUTATIONS)
def test_damaged_messages_are_read_as_the_stdlib_reads_them(index, mutations) -> None:
    if not CORPUS:
        _require(BOUNCES)
    lines = CORPUS[index % len(CORPUS)].read_bytes().splitlines(keepends=True)
    for op, where, extra in mutations:
        if not lines:
            break
        at = int(where * (len(lines) - 1))
        if op == "drop":
            del lines[at]
        elif op == "repeat":
            lines.insert(at, lines[-at])
        elif op == "cut":
            lines = lines[:at]
        elif op == "blank":
            lines.insert(at, b"\n")
        elif op == "unterminate":
            lines[at] = lines[at].rstrip(b"\r\n")
        elif op == "insert":
            lines.insert(at, extra)
        else:
            lines[at] = lines[at].replace(b"\r\n", b"\n")
    raw = b"".join(lines)
    assert _tree(mime.message_from_bytes(raw)) == _tree(_stdlib(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: old Mac line ends\rContent-Type: text/plain\r\rbody\r",
        b"Content-Type: multipart/digest; boundary=b\n\n--b\n\nSubject: inner\n\nx\n--b--\n",
        b" continued first\nSubject: x\n\nbody\n",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\nSubject: y\n\nz\n--b--\n",
    ],
    ids=["bare-cr", "digest", "continuation-first", "repeated-delimiter"],
)
def test_structure_the_fast_reader_leaves_alone_is_read_by_the_stdlib(raw: bytes) -> None:
    with pytest.raises(mime.Unusual):
        mime._read(raw.decode("ascii", "surrogateescape"))
    assert _tree(mime.message_from_bytes(raw)) == _tree(_stdlib(raw))


def test_delivery_status_fields_are_kept_as_their_text() -> None:
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        b"--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.org\n\n"
        b"Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n--b--\n"
    )
    part = mime.message_from_bytes(raw).get_payload()[0]
    assert _delivery_status_text(part) == (
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1"
    )


def test_a_phrase_is_guarded_by_the_longest_literal_it_cannot_match_without() -> None:
    assert vocabulary.required_literals(re.compile(r"mailbox (?:is )?full")) == ("mailbox ",)
    # No long enough literal outside the group: one of the group's alternatives is needed.
    assert vocabulary.required_literals(re.compile(r"[^a-z](?:no such|unknown)\b")) == (
        "no such",
        "unknown",
    )


def test_a_pattern_without_a_usable_literal_is_not_prefiltered() -> None:
    assert vocabulary.required_literals(re.compile(r"[45]\d\d|ab")) is None
    assert vocabulary.required_literals(re.compile("mailbox full", re.IGNORECASE)) is None


def _regex_phrases() -> list[tuple[vocabulary.Phrases, str]]:
    phrases: list[tuple[vocabulary.Phrases, str]] = []
    for rules in (vocabulary.TEXT_RULES, vocabulary.GENERIC_TEXT_RULES):
        for _, rule in rules:
            if isinstance(rule, vocabulary.Phrases):
                phrases.extend((rule, p) for p in mta._alternatives(rule.pattern))
    return [(rule, p) for rule, p in phrases if vocabulary._REGEX_SYNTAX.search(p)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_text_a_phrase_matches_passes_its_prefilter(data) -> None:
    rule, phrase = data.draw(st.sampled_from(_regex_phrases()))
    pattern = re.compile(phrase)
    text = data.draw(st.from_regex(pattern))
    assert rule.search(text)
    guarded = vocabulary.Prefiltered(pattern)
    assert guarded.search(text) is not None
    assert guarded.search(text).span() == pattern.search(text).span()


def _one_alternation() -> re.Pattern[str]:
    """The MTA header patterns as one alternation, as detect_mta read them before #12."""
    parts = [
        f"(?P<f{index}>{family.headers.pattern})"
        for index, family in enumerate(mta.MTA_FAMILIES)
        if family.headers is not None
    ]
    return re.compile("|".join(parts), re.MULTILINE)


HEADER_LINES = [
    "received: (qmail 1234 invoked for bounce)",
    "received: from mx.example.org by courier mta",
    "from: mailer-daemon@googlemail.com",
    "from: courier mail server <mailer-daemon@aol.com>",
    "from: courier mta <postmaster@hotpop.com>",
    "x-mailer: microsoft exchange",
    "x-mailer: imail 8.0",
    "x-failed-recipients: a@example.com",
    "x-mimetrack: itemize by smtp server",
    "subject: undelivered mail returned to sender",
    "from: mailer-daemon@mail.ru",
]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.sampled_from(HEADER_LINES), max_size=6))
def test_the_split_header_patterns_pick_the_family_one_alternation_picks(lines) -> None:
    digest = "\n".join(lines)
    match = _one_alternation().search(digest)
    expected = mta.MTA_FAMILIES[int(match.lastgroup[1:])] if match else None
    # No opening prose: only the headers decide.
    assert mta.detect_mta(digest, "") is expected


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/mixed; boundary="abc"',
        "multipart/mixed; boundary=----=_NextPart_000",
        'multipart/mixed;\r\n\tboundary="=_x y "',
        'Multipart/Mixed; BOUNDARY = "q;r" ; charset=x',
        'multipart/mixed; boundary=""',
        'multipart/mixed; boundary="<a>"',
        "multipart/mixed; boundary=a b",
        "multipart/mixed; boundary*=us-ascii''abc",
        'multipart/mixed; x="a;boundary=b"; boundary=c',
        "boundary=x; y=z",
        'multipart/mixed; boundary="a"b',
        'multipart/mixed; boundary="a\\"b"',
    ],
)
def test_the_boundary_parameter_is_read_as_compat32_reads_it(content_type: str) -> None:
    msg = email.message_from_string(f"Content-Type: {content_type}\n\n", policy=policy.compat32)
    assert mime._boundary(msg) == msg.get_boundary()


def test_an_empty_boundary_delimits_parts_with_bare_dashes_as_in_the_stdlib() -> None:
    raw = b'Content-Type: multipart/mixed; boundary=""\n\n--\nSubject: a\n\nb\n----\n'
    assert _tree(mime.message_from_bytes(raw)) == _tree(_stdlib(raw))
    assert mime.message_from_bytes(raw).is_multipart()
