"""Bounce (DSN) parsing and classification; pure Python, no Django imports."""

from .dsn import DeliveryFacts, ParsedReport, parse_report
from .rules import (
    REASONS,
    BounceResult,
    Reason,
    RecipientResult,
    classify_bounce,
    classify_failure,
    classify_report,
)

__all__ = [
    "REASONS",
    "BounceResult",
    "DeliveryFacts",
    "ParsedReport",
    "Reason",
    "RecipientResult",
    "classify_bounce",
    "classify_failure",
    "classify_report",
    "parse_report",
]
