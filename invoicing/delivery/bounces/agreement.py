"""How often a classifier agrees with labelled bounces: per field and per labelled reason.

The labels use Sisimai's reason names and its hard/soft rule (see the conformance README);
our public reasons are coarser, so a label's reason is mapped through ``DETAIL_TO_REASON``
before comparing. Used by ``classify_bounce --expected``, the corpus test and the bench.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .rules import DETAIL_TO_REASON, Reason

__all__ = [
    "FIELDS",
    "Agreement",
    "expected_reason",
    "load_expected",
]

FIELDS: tuple[str, ...] = (
    "is_bounce",
    "hard",
    "recipient",
    "status",
    "reply_code",
    "action",
    "reason",
)


def load_expected(path: Path) -> list[dict]:
    """The rows of an ``expected.jsonl`` file (one JSON object per line)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def expected_reason(label: str | None) -> str:
    """Our public reason for a labelled (Sisimai-named) reason."""
    if label is None:
        return Reason.OTHER.value
    if label in ("undefined", "onhold"):
        return Reason.NEEDS_REVIEW.value
    return DETAIL_TO_REASON.get(label, Reason.OTHER).value


def _same(name: str, want: object, got: object) -> bool:
    if name == "reason":
        want = expected_reason(want)  # type: ignore[arg-type]
        if want in (Reason.OTHER.value, Reason.NEEDS_REVIEW.value):
            # Neither side claims a specific public reason: that is agreement.
            return got in (Reason.OTHER.value, Reason.NEEDS_REVIEW.value)
    if name == "recipient" and isinstance(want, str) and isinstance(got, str):
        return want.lower() == got.lower()
    return want == got


@dataclass
class Agreement:
    """Counts of agreeing rows, per field and per (labelled reason, field)."""

    fields: tuple[str, ...] = FIELDS
    total: int = 0
    agree: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, dict[str, int]] = field(default_factory=dict)
    reason_total: dict[str, int] = field(default_factory=dict)
    misses: list[tuple[str, str, object, object]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, row: Mapping[str, object], got: Mapping[str, object]) -> None:
        """Count one labelled ``row`` against what a classifier returned (``got``).

        A field missing from ``got`` (a baseline may not report it) or from ``row`` (not
        labelled) is not counted.
        """
        self.total += 1
        label = str(row.get("reason"))
        self.reason_total[label] = self.reason_total.get(label, 0) + 1
        per_reason = self.by_reason.setdefault(label, {})
        for name in self.fields:
            if name not in got or name not in row:
                continue
            self.seen.add(name)
            ok = _same(name, row.get(name), got[name])
            if ok:
                self.agree[name] = self.agree.get(name, 0) + 1
                per_reason[name] = per_reason.get(name, 0) + 1
            else:
                self.misses.append((str(row.get("file")), name, row.get(name), got[name]))

    def rate(self, name: str) -> float:
        return self.agree.get(name, 0) / self.total if self.total else 0.0

    def field_table(self, fields: Iterable[str] | None = None) -> str:
        names = tuple(fields or self.fields)
        lines = [f"{'field':<12} {'agree':>9} {'rate':>7}"]
        for name in names:
            if name not in self.seen:
                continue
            agree = self.agree.get(name, 0)
            lines.append(f"{name:<12} {agree:>4}/{self.total:<4} {100 * self.rate(name):6.1f}%")
        return "\n".join(lines)

    def reason_table(
        self, fields: Iterable[str] = ("is_bounce", "hard", "recipient", "reason")
    ) -> str:
        names = tuple(fields)
        header = f"{'labelled reason':<17} {'n':>4} " + " ".join(f"{n:>10}" for n in names)
        lines = [header]
        for label in sorted(self.reason_total, key=lambda k: (-self.reason_total[k], k)):
            n = self.reason_total[label]
            counts = self.by_reason.get(label, {})
            cells = " ".join(
                f"{100 * counts.get(name, 0) / n:9.0f}%" if name in self.seen else f"{'-':>10}"
                for name in names
            )
            lines.append(f"{label:<17} {n:>4} {cells}")
        return "\n".join(lines)


def measure(
    rows: Iterable[Mapping[str, object]],
    directory: Path,
    classify: Callable[[bytes], Mapping[str, object]],
) -> Agreement:
    """Run ``classify`` over every labelled file in ``directory`` and count agreement."""
    agreement = Agreement()
    for row in rows:
        raw = (directory / str(row["file"])).read_bytes()
        agreement.add(row, classify(raw))
    return agreement
