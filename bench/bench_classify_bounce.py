"""Throughput of classify_bounce on the bounce corpus, with flufl.bounce as a baseline.

Plain Python, no Django:  .venv/bin/python bench/bench_classify_bounce.py [--seconds 3]
The corpus is found like the tests find it: $PORTAL_SHARED_DIR, else ../shared beside the repo.
"""

from __future__ import annotations

import argparse
import email
import os
import sys
import time
from collections.abc import Callable
from email import policy
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from invoicing.delivery.bounces import classify_bounce  # noqa: E402 - needs the path above


def corpus() -> list[bytes]:
    shared = Path(os.environ.get("PORTAL_SHARED_DIR") or REPO_ROOT.parent / "shared")
    directory = shared / "conformance" / "bounces" / "messages"
    files = sorted(directory.glob("*.eml"))
    if not files:
        raise SystemExit(f"no corpus at {directory}; set PORTAL_SHARED_DIR")
    return [f.read_bytes() for f in files]


def flufl_classify(raw: bytes) -> object:
    from flufl.bounce import scan_message

    # flufl.bounce wants a parsed message; parsing is part of the work being measured.
    return scan_message(email.message_from_bytes(raw, policy=policy.compat32))


def measure(
    name: str, func: Callable[[bytes], object], messages: list[bytes], seconds: float
) -> float:
    for raw in messages:  # warm up imports and regex caches
        func(raw)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for raw in messages:
            func(raw)
        count += len(messages)
    rate = count / (time.perf_counter() - start)
    print(f"{name:<22} {rate:10.0f} messages/s  ({count} messages)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per contender")
    args = parser.parse_args()
    messages = corpus()
    print(f"corpus: {len(messages)} messages, {sum(map(len, messages)) // 1024} KiB")
    ours = measure("classify_bounce", classify_bounce, messages, args.seconds)
    try:
        import flufl.bounce  # noqa: F401
    except ImportError:
        print("flufl.bounce not installed; no baseline")
        return
    theirs = measure("flufl.bounce.scan", flufl_classify, messages, args.seconds)
    print(f"ratio classify_bounce / flufl.bounce: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
