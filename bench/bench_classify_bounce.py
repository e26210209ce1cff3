"""Accuracy and throughput of classify_bounce on both bounce corpora, beside flufl.bounce.

Plain Python, no Django:  .venv/bin/python bench/bench_classify_bounce.py [--seconds 3]
The corpora are found like the tests find them: $PORTAL_SHARED_DIR, else ../shared beside
the repo (conformance/bounces and conformance/bounces-more, each with expected.jsonl).

flufl.bounce reports only which addresses failed, permanently or temporarily, so it is scored
on is_bounce, recipient (the first address it returns) and hard (a permanent failure); the
other fields show '-' for it.
"""

from __future__ import annotations

import argparse
import email
import os
import sys
import time
from collections.abc import Callable, Mapping
from email import policy
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from invoicing.delivery.bounces import classify_bounce  # noqa: E402 - needs the path above
from invoicing.delivery.bounces.agreement import Agreement, load_expected  # noqa: E402

CORPORA = ("bounces", "bounces-more")
FIELDS = ("is_bounce", "hard", "recipient", "status", "reason")


def corpus(name: str) -> tuple[list[dict], list[bytes]]:
    shared = Path(os.environ.get("PORTAL_SHARED_DIR") or REPO_ROOT.parent / "shared")
    directory = shared / "conformance" / name
    expected = directory / "expected.jsonl"
    if not expected.exists():
        raise SystemExit(f"no corpus at {directory}; set PORTAL_SHARED_DIR")
    rows = load_expected(expected)
    return rows, [(directory / "messages" / row["file"]).read_bytes() for row in rows]


def ours(raw: bytes) -> Mapping[str, object]:
    return classify_bounce(raw).to_json_dict()


def flufl_classify(raw: bytes) -> Mapping[str, object]:
    from flufl.bounce import all_failures

    # flufl.bounce wants a parsed message; parsing is part of the work being measured.
    temporary, permanent = all_failures(email.message_from_bytes(raw, policy=policy.compat32))
    addresses = [
        a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
        for a in (*sorted(permanent), *sorted(temporary))
    ]
    return {
        "is_bounce": bool(addresses),
        "recipient": addresses[0].lower() if addresses else None,
        "hard": True if permanent else (False if temporary else None),
    }


def measure(
    contenders: Mapping[str, Callable[[bytes], object]], messages: list[bytes], seconds: float
) -> dict[str, float]:
    """Messages per second for each contender, timed in alternating rounds.

    Alternating rounds and CPU time (not wall time) keep the comparison fair on a shared
    machine whose load changes.
    """
    for func in contenders.values():  # warm up imports and regex caches
        for raw in messages:
            func(raw)
    spent = dict.fromkeys(contenders, 0.0)
    done = dict.fromkeys(contenders, 0)
    deadline = time.perf_counter() + seconds * len(contenders)
    while time.perf_counter() < deadline:
        for name, func in contenders.items():
            start = time.process_time()
            for raw in messages:
                func(raw)
            spent[name] += time.process_time() - start
            done[name] += len(messages)
    return {name: done[name] / spent[name] for name in contenders}


def score(func: Callable[[bytes], Mapping[str, object]], rows, messages) -> Agreement:
    agreement = Agreement()
    for row, raw in zip(rows, messages, strict=True):
        agreement.add(row, func(raw))
    return agreement


def cell(agreement: Agreement, name: str) -> str:
    if name not in agreement.seen:
        return f"{'-':>8}"
    return f"{100 * agreement.rate(name):7.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per contender")
    args = parser.parse_args()
    try:
        import flufl.bounce  # noqa: F401

        contenders = {"classify_bounce": ours, "flufl.bounce": flufl_classify}
    except ImportError:
        print("flufl.bounce not installed (requirements-dev.txt); no baseline")
        contenders = {"classify_bounce": ours}
    everything: list[bytes] = []
    for name in CORPORA:
        rows, messages = corpus(name)
        everything.extend(messages)
        print(f"\n{name}: {len(messages)} labelled messages, {sum(map(len, messages)) // 1024} KiB")
        print(f"{'field':<12}" + "".join(f"{c:>17}" for c in contenders))
        scored = {c: score(f, rows, messages) for c, f in contenders.items()}
        for field in FIELDS:
            print(f"{field:<12}" + "".join(f"{cell(a, field):>17}" for a in scored.values()))
        print("per labelled reason (classify_bounce):")
        print(scored["classify_bounce"].reason_table())
    print(f"\nspeed, both corpora ({len(everything)} messages), same run:")
    rates = measure(contenders, everything, args.seconds)
    for c, rate in rates.items():
        print(f"{c:<22} {rate:10.0f} messages/s")
    if len(rates) == 2:
        ratio = rates["classify_bounce"] / rates["flufl.bounce"]
        print(f"ratio classify_bounce / flufl.bounce: {ratio:.2f}x")


if __name__ == "__main__":
    main()
