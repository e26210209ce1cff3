"""The bounce classifier against real bounces (Sisimai's corpus) and tricky non-bounces.

Pure Python: no Django, no database. The shared conformance data lives outside the
repository; see ``shared_dir`` for how it is found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoicing.delivery.bounces import REASONS, BounceResult, classify_bounce

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def shared_dir() -> Path:
    """``$PORTAL_SHARED_DIR``, else the ``shared`` directory beside the repository root."""
    configured = os.environ.get("PORTAL_SHARED_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared"


def _require(path: Path) -> Path:
    if path.exists():
        return path
    reason = f"conformance data not found at {path}; set PORTAL_SHARED_DIR to the shared folder"
    if os.environ.get("PORTAL_TEST_STRICT") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pragma: no cover - skip() raises


BOUNCES = shared_dir() / "conformance" / "bounces"
MIME = shared_dir() / "conformance" / "mime"


def _expected_rows() -> list[dict]:
    path = BOUNCES / "expected.jsonl"
    if not path.exists():
        # Collected as one case that skips (or fails in strict mode) with a clear reason.
        return [{"file": "<missing corpus>"}]
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _mime_files() -> list[str]:
    if not MIME.is_dir():
        return ["<missing corpus>"]
    return sorted(p.name for p in MIME.glob("*.eml"))


# Where we knowingly disagree with Sisimai's expectations. Each entry says why; the test is a
# strict xfail, so fixing one (or the data changing) makes the suite say so.
KNOWN_DIFFERENCES: dict[str, str] = {
    "0006.eml": (
        "ARF report whose original To is only the display name 'undisclosed'; Sisimai "
        "invents 'undisclosed-recipient-in-headers@libsisimai.org.invalid', we report None"
    ),
    "0081.eml": (
        "Exchange lists two attempts; we use the DSN's 4.4.7 (queue expired) and the last "
        "remote answer, Sisimai picks the older attempt's 4.4.1 from the prose"
    ),
    "0092.eml": (
        "sender rejected at MAIL FROM with no enhanced code: we give the pseudo code 5.0.918 "
        "(rejected), Sisimai's parser leaves it 'onhold' (5.0.901)"
    ),
    "0153.eml": (
        "Final-Recipient and the quoted To say ...-neko-nyaaaaaaan@, only an anonymised "
        "mailto: link says ...-nyaaaaaaan@; Sisimai takes the link, we take Final-Recipient"
    ),
    "0268.eml": (
        "Verizon MMS 'No valid recipients' with no code and no SMTP stage: our rule keeps "
        "unconfirmed unknown-user bounces soft (filtered); Sisimai's Verizon module says hard"
    ),
    "0291.eml": (
        "the DSN fields say '550 5.1.1 User Unknown' while the prose says 'Not enough disk "
        "space'; we trust the DSN (hard user_unknown), Sisimai the prose (soft mailboxfull)"
    ),
    "0393.eml": (
        "Sisimai truncates the recipient to 'kijitora@exampl' on this CRLF message; the "
        "quoted original's To is kijitora@example.com, which we report"
    ),
}

SISIMAI_TO_OURS = {
    "userunknown": "user_unknown",
    "mailboxfull": "mailbox_full",
    "hostunknown": "host_unknown",
    "mesgtoobig": "message_too_large",
    "exceedlimit": "message_too_large",
    "blocked": "policy_blocked",
    "rejected": "policy_blocked",
    "policyviolation": "policy_blocked",
    "securityerror": "policy_blocked",
    "spamdetected": "spam_blocked",
    "virusdetected": "spam_blocked",
    "expired": "expired",
    "vacation": "auto_reply",
    "feedback": "complaint",
    "delivered": "delivered",
}


def _case(row: dict) -> pytest.param:
    name = row["file"]
    marks = []
    if name in KNOWN_DIFFERENCES:
        marks.append(pytest.mark.xfail(reason=KNOWN_DIFFERENCES[name], strict=True))
    return pytest.param(row, id=name, marks=marks)


@pytest.mark.parametrize("row", [_case(row) for row in _expected_rows()])
def test_corpus_message_matches_expected(row: dict) -> None:
    path = _require(BOUNCES / "messages" / row["file"])
    result = classify_bounce(path.read_bytes())

    got = {f: getattr(result, f) for f in ("is_bounce", "hard", "recipient", "status")}
    want = {f: row[f] for f in ("is_bounce", "hard", "recipient", "status")}
    assert got == want, f"reason={result.reason} diagnostic={result.diagnostic!r}"


def test_corpus_reason_agreement_is_reported() -> None:
    """Reasons need not match Sisimai everywhere, but most should and all must be ours."""
    _require(BOUNCES / "expected.jsonl")
    rows = _expected_rows()
    agree = 0
    for row in rows:
        result = classify_bounce((BOUNCES / "messages" / row["file"]).read_bytes())
        assert result.reason in REASONS
        want = SISIMAI_TO_OURS.get(row["reason"])
        if want is None:
            agree += result.reason in ("other", "needs_review")
        else:
            agree += result.reason == want
    # A floor, not a target: it catches a rules change that quietly breaks many reasons.
    assert agree >= int(len(rows) * 0.7), f"only {agree}/{len(rows)} reasons agree"


def test_corpus_json_dict_has_exactly_the_public_keys() -> None:
    path = _require(BOUNCES / "messages" / "0018.eml")
    payload = classify_bounce(path.read_bytes()).to_json_dict()
    assert set(payload) == {
        "is_bounce",
        "recipient",
        "action",
        "status",
        "reply_code",
        "hard",
        "reason",
        "diagnostic",
    }
    json.dumps(payload)


@pytest.mark.parametrize("name", _mime_files())
def test_tricky_mime_message_is_not_a_bounce(name: str) -> None:
    path = _require(MIME / name)
    result = classify_bounce(path.read_bytes())
    assert isinstance(result, BounceResult)
    assert result.is_bounce is False
    assert result.hard is None


# --------------------------------------------------------------------------- robustness


def _corpus_samples() -> list[bytes]:
    samples: list[bytes] = []
    for directory in (BOUNCES / "messages", MIME):
        if directory.is_dir():
            samples.extend(p.read_bytes() for p in sorted(directory.glob("*.eml")))
    return samples


CORPUS_SAMPLES = _corpus_samples()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(raw: bytes) -> None:
    result = classify_bounce(raw)
    assert isinstance(result, BounceResult)
    assert result.reason in REASONS
    if not result.is_bounce:
        assert result.hard is None or result.reason == "delivered"
    json.dumps(result.to_json_dict())


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check(raw)


@FUZZ
@given(
    st.binary(max_size=64).map(
        lambda tail: (
            b"Content-Type: multipart/report; report-type=delivery-status;"
            b' boundary="b"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n' + tail
        )
    )
)
def test_arbitrary_report_bodies_never_raise(raw: bytes) -> None:
    _check(raw)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    if not CORPUS_SAMPLES:
        return draw(st.binary(max_size=512))
    raw = bytearray(draw(st.sampled_from(CORPUS_SAMPLES)))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        if not raw:
            break
        kind = draw(st.sampled_from(["truncate", "insert", "flip", "delete", "dup-line"]))
        at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
        if kind == "truncate":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = draw(
                st.sampled_from(
                    [b"\r\n", b"\n--", b"\x00", b"=?utf-8?b?", b"\xff\xfe", b";", b"<@>", b"\t"]
                )
                | st.binary(min_size=1, max_size=32)
            )
        elif kind == "flip":
            raw[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(min_value=1, max_value=200))]
        else:
            end = raw.find(b"\n", at)
            line = raw[at : end + 1 if end >= 0 else len(raw)]
            raw[at:at] = line * draw(st.integers(min_value=1, max_value=20))
    return bytes(raw)


@FUZZ
@given(mutated_messages())
def test_mutated_corpus_messages_never_raise(raw: bytes) -> None:
    _check(raw)


def test_pathological_inputs_are_handled_quickly() -> None:
    # Deep nesting and endless headers are what attackers (and broken MTAs) send.
    nested = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    for depth in range(200):
        nested += b"--a\r\nContent-Type: message/rfc822\r\n\r\n"
        nested += f"Content-Type: multipart/mixed; boundary=a{depth}\r\n\r\n".encode()
    cases = [
        b"",
        b"\r\n\r\n",
        nested,
        b"Subject: " + b"x" * 2_000_000 + b"\r\n\r\nbody",
        b"From: MAILER-DAEMON@example.com\r\nSubject: Undeliverable\r\n\r\n"
        + b"<a@b.example>:\r\n550 5.1.1 unknown\r\n" * 20000,
    ]
    for raw in cases:
        _check(raw)
