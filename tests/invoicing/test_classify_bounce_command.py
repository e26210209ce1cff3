"""``manage.py classify_bounce``: one JSON line per file, and the agreement table on request."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bounces"
PUBLIC_KEYS = {
    "file",
    "is_bounce",
    "recipient",
    "action",
    "status",
    "reply_code",
    "hard",
    "reason",
    "diagnostic",
}


def _run(*args: str) -> list[str]:
    out = StringIO()
    call_command("classify_bounce", *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_prints_one_json_object_with_the_public_keys_per_file() -> None:
    lines = _run(str(FIXTURES / "dead-domain-exim.eml"), str(FIXTURES / "delay-exim.eml"))
    rows = [json.loads(line) for line in lines]
    assert [set(row) for row in rows] == [PUBLIC_KEYS, PUBLIC_KEYS]
    assert rows[0]["hard"] is True
    assert rows[1]["action"] == "delayed"


def test_expected_prints_the_per_field_and_per_reason_agreement_table() -> None:
    lines = _run("--expected", str(FIXTURES / "expected.jsonl"))
    labelled = (FIXTURES / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    json_lines = [line for line in lines if line.startswith("{")]
    assert len(json_lines) == len(labelled)
    text = "\n".join(lines)
    assert f"({len(labelled)} labelled)" in text
    is_bounce_row = next(line for line in lines if line.startswith("is_bounce"))
    assert f"{len(labelled)}/{len(labelled)}" in is_bounce_row
    assert "labelled reason" in text
    assert any(line.startswith("userunknown") for line in lines)


def test_an_unreadable_file_is_reported_and_fails_the_command() -> None:
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("classify_bounce", str(FIXTURES / "no-such-file.eml"), stdout=out)
    assert "error" in json.loads(out.getvalue().splitlines()[0])


def test_it_asks_for_files_or_labels() -> None:
    with pytest.raises(CommandError):
        call_command("classify_bounce", stdout=StringIO())
