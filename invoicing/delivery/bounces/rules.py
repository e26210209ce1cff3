"""Classify parsed reports: bounce or not, why, and whether the address should be dropped.

Hard/soft is our own policy, not the remote server's label: only failures that say the
address itself is dead (no such user, no such domain, null MX, moved) are hard, wherever in
the SMTP dialogue they were said - except an "unknown user" answer after DATA, which is how
content filters refuse, and a refusal at MAIL FROM, which is about our sender. Everything
else - full mailboxes, size limits, greylisting, policy and spam blocks, timeouts, and every
delay notice - is soft, because retrying later or fixing our side can still succeed. A
failure we cannot recognise is ``needs_review`` and never hard: wrongly suppressing a
client's address costs more than one more bounce.

Where a report carries no status code, the status is derived from the cause as Sisimai's
reason table does (``PSEUDO_STATUS``): ``X.0.9NN``, a detail no real enhanced status code
uses, so a derived status always says it was derived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from .dsn import (
    DeliveryFacts,
    ParsedReport,
    address_domain,
    find_last_status,
    find_reply_code,
    find_status,
    fold,
    parse_report,
)
from .server_codes import remote_host_from_text, server_detail
from .vocabulary import DIRECTORY_REJECT_RE, GENERIC_TEXT_RULES, TEXT_RULES, Prefiltered

__all__ = [
    "REASONS",
    "BounceResult",
    "Reason",
    "RecipientResult",
    "classify_bounce",
    "classify_failure",
]


class Reason(StrEnum):
    USER_UNKNOWN = "user_unknown"
    MAILBOX_FULL = "mailbox_full"
    HOST_UNKNOWN = "host_unknown"
    MESSAGE_TOO_LARGE = "message_too_large"
    POLICY_BLOCKED = "policy_blocked"
    SPAM_BLOCKED = "spam_blocked"
    EXPIRED = "expired"
    AUTO_REPLY = "auto_reply"
    COMPLAINT = "complaint"
    DELIVERED = "delivered"
    NEEDS_REVIEW = "needs_review"
    OTHER = "other"


REASONS: tuple[str, ...] = tuple(reason.value for reason in Reason)

# Fine-grained causes (named as in Sisimai, whose test data we check against) collapse into
# the closed public list above. Several causes share a public reason on purpose.
DETAIL_TO_REASON: dict[str, Reason] = {
    "userunknown": Reason.USER_UNKNOWN,
    "hasmoved": Reason.USER_UNKNOWN,
    "mailboxfull": Reason.MAILBOX_FULL,
    "hostunknown": Reason.HOST_UNKNOWN,
    "notaccept": Reason.HOST_UNKNOWN,
    "mesgtoobig": Reason.MESSAGE_TOO_LARGE,
    "exceedlimit": Reason.MESSAGE_TOO_LARGE,
    "blocked": Reason.POLICY_BLOCKED,
    "requireptr": Reason.POLICY_BLOCKED,
    "badreputation": Reason.POLICY_BLOCKED,
    "rejected": Reason.POLICY_BLOCKED,
    "norelaying": Reason.POLICY_BLOCKED,
    "policyviolation": Reason.POLICY_BLOCKED,
    "securityerror": Reason.POLICY_BLOCKED,
    "authfailure": Reason.POLICY_BLOCKED,
    "notcompliantrfc": Reason.POLICY_BLOCKED,
    "mailererror": Reason.OTHER,
    "speeding": Reason.POLICY_BLOCKED,
    "spamdetected": Reason.SPAM_BLOCKED,
    "virusdetected": Reason.SPAM_BLOCKED,
    "expired": Reason.EXPIRED,
    "vacation": Reason.AUTO_REPLY,
    "feedback": Reason.COMPLAINT,
    "delivered": Reason.DELIVERED,
    "undefined": Reason.NEEDS_REVIEW,
}

# Causes that mean "this address is dead" (see ``is_hard`` for the exceptions).
HARD_DETAILS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})

# Sisimai-compatible pseudo status codes, used only when a report carries no enhanced status
# at all, so that every failure still has a comparable code. Real codes always win.
PSEUDO_STATUS: dict[str, str] = {
    "authfailure": "972",
    "badreputation": "975",
    "blocked": "971",
    "contenterror": "960",
    "exceedlimit": "923",
    "expired": "947",
    "filtered": "910",
    "hasmoved": "916",
    "hostunknown": "912",
    "mailboxfull": "922",
    "mailererror": "939",
    "mesgtoobig": "934",
    "networkerror": "944",
    "norelaying": "909",
    "notaccept": "932",
    "onhold": "901",
    "policyviolation": "972",
    "rejected": "918",
    "requireptr": "971",
    "securityerror": "970",
    "spamdetected": "980",
    "speeding": "946",
    "suspend": "921",
    "syntaxerror": "902",
    "systemerror": "930",
    "systemfull": "931",
    "toomanyconn": "945",
    "userunknown": "911",
    "undefined": "900",
    "virusdetected": "971",
}

# Enhanced status codes whose meaning is specific enough to decide the cause on their own.
STATUS_TO_DETAIL: dict[str, str] = {
    "2.1.5": "delivered",
    "4.1.6": "hasmoved",
    "4.1.7": "rejected",
    "4.1.8": "rejected",
    "4.2.1": "suspend",
    "4.2.2": "mailboxfull",
    "4.2.3": "exceedlimit",
    "4.3.1": "systemfull",
    "4.3.2": "notaccept",
    "4.4.1": "expired",
    "4.4.2": "networkerror",
    "4.4.4": "networkerror",
    "4.4.5": "systemfull",
    "4.4.6": "networkerror",
    "4.4.7": "expired",
    "4.7.1": "blocked",
    "4.7.25": "requireptr",
    "4.7.26": "authfailure",
    "5.1.0": "userunknown",
    "5.1.1": "userunknown",
    "5.1.2": "hostunknown",
    "5.1.3": "userunknown",
    "5.1.4": "filtered",
    "5.1.6": "hasmoved",
    "5.1.7": "rejected",
    "5.1.8": "rejected",
    "5.1.10": "notaccept",
    "5.2.0": "filtered",
    "5.2.1": "filtered",
    "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit",
    "5.2.4": "filtered",
    "5.3.0": "systemerror",
    "5.3.1": "systemfull",
    "5.3.2": "notaccept",
    "5.3.4": "mesgtoobig",
    "5.4.0": "networkerror",
    "5.4.4": "hostunknown",
    "5.5.3": "toomanyconn",
    "5.6.0": "contenterror",
    "5.7.0": "securityerror",
    "5.7.1": "securityerror",
    "5.7.9": "securityerror",
    "5.7.13": "suspend",
    "5.7.17": "hasmoved",
    "5.7.18": "hasmoved",
    "5.7.20": "authfailure",
    "5.7.21": "authfailure",
    "5.7.22": "authfailure",
    "5.7.23": "authfailure",
    "5.7.24": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
    "5.7.27": "notaccept",
}


# Where a report says which SMTP command was refused. Found with plain substring search on
# whitespace-folded, lower-cased text: much faster than one regex of alternatives.
COMMAND_PHRASES: tuple[tuple[str, str], ...] = (
    ("in reply to rcpt", "RCPT"),
    ("after rcpt", "RCPT"),
    ("rcpt to:<", "RCPT"),
    ("rcpt to: <", "RCPT"),
    ("rcpt to <", "RCPT"),
    ("does not like recipient", "RCPT"),
    ("did not like our rcpt", "RCPT"),
    ("smtp:rcpt", "RCPT"),
    ("rcpt command", "RCPT"),
    ("in reply to data", "DATA"),
    ("in reply to end of data", "DATA"),
    ("after data", "DATA"),
    ("after end of data", "DATA"),
    ("failed after i sent the message", "DATA"),
    ("data command", "DATA"),
    ("in reply to mail", "MAIL"),
    ("after mail from", "MAIL"),
    ("sender was rejected", "MAIL"),
    ("mail from command", "MAIL"),
    # Refused before any command: at connection or greeting, which is about the sender.
    ("after initial connection", "CONN"),
    ("in reply to initial greeting", "CONN"),
    ("greeting failure", "CONN"),
)


def _command_phrase(folded: str) -> str | None:
    """The command named by the earliest command phrase in ``folded`` text."""
    best: tuple[int, str] | None = None
    for phrase, command in COMMAND_PHRASES:
        index = folded.find(phrase)
        if index >= 0 and (best is None or index < best[0]):
            best = (index, command)
    return best[1] if best else None


# Sendmail-style transcripts: ">>> COMMAND" followed by the server's "<<< 5xx" answer.
TRANSCRIPT_RE = re.compile(
    r"\n[ \t]*>>>\s*(rcpt|data|mail)\b[^\n]*\n(?:[ \t]*<<<\s*[23]\d\d[^\n]*\n)*[ \t]*<<<\s*[45]\d\d"
)

# Prefiltered: only run on text with the "... " it needs (see vocabulary.Prefiltered).
SENDMAIL_RCPT_ECHO_RE = Prefiltered(
    re.compile(r"[^\w][45]\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3} )?<?[^\s<>]+@[^\s<>]+?>?\.\.\. ")
)


@lru_cache(maxsize=128)
def smtp_command(*texts: str | None) -> str | None:
    """The SMTP command the remote server refused, if the report says (first refusal wins)."""
    # Lower-case patterns on lower-cased text, with a space in front for "[^\w]" boundaries:
    # several times faster than IGNORECASE and leading \b.
    texts = tuple(f"\n{text.lower()}" if text else None for text in texts)
    for text in texts:
        if not text:
            continue
        if ">>>" in text:
            match = TRANSCRIPT_RE.search(text)
            if match:
                return match.group(1).upper()
        command = _command_phrase(" ".join(text.split()))
        if command:
            return command
    for text in texts:
        # Sendmail echoes the recipient as "<addr>... reason" only when refusing RCPT TO.
        if text and SENDMAIL_RCPT_ECHO_RE.search(text):
            return "RCPT"
    return None


def classify_failure(
    status: str | None,
    reply_code: str | None,
    diagnostic: str | None,
    command: str | None = None,
    context: str | None = None,
    remote_host: str | None = None,
    recipient_domain: str | None = None,
) -> str:
    """The fine-grained cause of one failed delivery (``"undefined"`` when unrecognised).

    ``remote_host`` (the server that answered) and ``recipient_domain`` let a large
    provider's own codes and wording decide first (see ``server_codes``).
    """
    # A provider's own code first, then the generic reading.
    detail = server_detail(diagnostic, remote_host, recipient_domain, status, command)
    return detail or _generic_failure(status, reply_code, diagnostic, command, context)


def _generic_failure(
    status: str | None,
    reply_code: str | None,
    diagnostic: str | None,
    command: str | None,
    context: str | None,
) -> str:
    texts = [t for t in (diagnostic, context) if t]
    # The server's own words first, then its status code, then the reporting MTA's prose.
    detail = _match_specific(diagnostic, status, command)
    if detail:
        return detail
    if command == "CONN":
        # The receiving server would not even talk to us: a block on our side.
        return "blocked"
    if status:
        detail = STATUS_TO_DETAIL.get(status)
        if detail:
            return detail
    detail = _match_specific(context, status, command)
    if detail:
        return detail
    for text in texts:
        text = " " + text.lower()
        for detail, pattern in GENERIC_TEXT_RULES:
            if pattern.search(text):
                return detail
    if reply_code in ("552",):
        return "mailboxfull"
    if reply_code in ("421", "450", "451"):
        return "systemerror" if status is None else "undefined"
    return "undefined"


@lru_cache(maxsize=128)
def _match_specific(text: str | None, status: str | None, command: str | None) -> str | None:
    if not text:
        return None
    text = " " + text.lower()  # the vocabulary's convention (see vocabulary._rx)
    for detail, pattern in TEXT_RULES:
        if not pattern.search(text):
            continue
        if detail in ("hostunknown", "userunknown", "notaccept") and command == "MAIL":
            # Refused at MAIL FROM: it is our sender (domain) that was refused.
            return "rejected"
        if (
            detail == "userunknown"
            and command != "RCPT"
            and STATUS_TO_DETAIL.get(status or "") != "userunknown"
            and not DIRECTORY_REJECT_RE.search(text)
            and (command == "DATA" or _not_about_the_address(status, text))
        ):
            # "Unknown user" after the recipient was accepted is how several carriers'
            # content filters answer; it does not prove the mailbox is gone. Refused at
            # RCPT TO, with a x.1.1 code, or with no sign of the stage, it does.
            return "filtered"
        return detail
    return None


# "550 : User unknown": the reply has an empty slot where servers refusing RCPT TO put the
# address they refuse. Carriers whose address filters answer after DATA reply this way.
EMPTY_ADDRESS_REPLY_RE = re.compile(r"[^\w.][45]\d\d:? +(?:<> *)?: *(?:user|recipient) unknown")


def _not_about_the_address(status: str | None, text: str) -> bool:
    """Signs that an "unknown user" answer was not the verdict of a directory lookup."""
    if EMPTY_ADDRESS_REPLY_RE.search(text):
        return True
    # An explicit status of another class (mailbox 2, system 3, content 6, policy 7) is the
    # server saying what kind of failure this was, whatever its prose says. Not so undefined
    # (x.0.x), address (x.1.x), network (x.4.x: 5.4.1 is a directory edge block) and protocol
    # (x.5.x: relays write 5.5.0 for any bare 550 reply).
    subject = (status or "").split(".")[1:2]
    return subject in (["2"], ["3"], ["6"], ["7"]) and not is_derived_status(status)


def _address_failure_confirmed(status: str | None, command: str | None) -> bool:
    if command == "RCPT":
        return True
    if command in ("DATA", "MAIL"):
        return False
    # Only a standard address status counts; vendor codes such as Office 365's 5.1.351
    # merely wrap whatever the next hop said.
    return STATUS_TO_DETAIL.get(status or "") in ("userunknown", "notaccept")


def is_derived_status(status: str | None) -> bool:
    """Whether ``status`` is a pseudo code derived from the reason (``X.0.9NN``)."""
    if not status:
        return False
    _, _, rest = status.partition(".")
    subject, _, detail = rest.partition(".")
    return subject == "0" and len(detail) == 3 and detail.startswith("9")


def is_hard(detail: str, status: str | None, reply_code: str | None) -> bool:
    """A failure that says the address is dead is hard (null MX only when permanent)."""
    if detail not in HARD_DETAILS:
        return False
    if (status or "").startswith("4") and not (status or "").startswith("4.1."):
        # A temporary status that is not about the address: the wording is not proof.
        return False
    if detail != "notaccept":
        # The server says the mailbox or domain does not exist; a 4xx code only says it
        # would let us ask again, not that the answer could change.
        return True
    permanent = (status or "").startswith("5") or (reply_code or "").startswith("5")
    if status is None and reply_code is None:
        # Prose bounces without codes: the cause itself ("no such user") is the evidence.
        permanent = True
    return permanent


@dataclass(frozen=True)
class RecipientResult:
    """The classification of one recipient in a report."""

    recipient: str | None
    action: str | None
    status: str | None
    reply_code: str | None
    hard: bool | None
    reason: str
    diagnostic: str | None


@dataclass(frozen=True)
class BounceResult:
    """The verdict on one message; ``recipients`` lists every recipient the report names."""

    is_bounce: bool
    recipient: str | None
    action: str | None
    status: str | None
    reply_code: str | None
    hard: bool | None
    reason: str
    diagnostic: str | None
    recipients: tuple[RecipientResult, ...] = ()

    @property
    def status_derived(self) -> bool:
        """True when the report carried no status and ours was derived from the reason."""
        return is_derived_status(self.status)

    def to_json_dict(self) -> dict[str, object]:
        return {
            "is_bounce": self.is_bounce,
            "recipient": self.recipient,
            "action": self.action,
            "status": self.status,
            "reply_code": self.reply_code,
            "hard": self.hard,
            "reason": self.reason,
            "diagnostic": self.diagnostic,
        }


NOT_A_BOUNCE = BounceResult(
    is_bounce=False,
    recipient=None,
    action=None,
    status=None,
    reply_code=None,
    hard=None,
    reason=Reason.OTHER.value,
    diagnostic=None,
)

TEMPORARY_TEXT_RE = re.compile(
    r"delayed|delay|will be retried|warning only|temporary (?:failure|error)|"
    r"still (?:being )?retr|will (?:keep|continue) (?:trying|to try)|deferred",
    re.IGNORECASE,
)


def _classify_recipient(facts: DeliveryFacts, report: ParsedReport) -> RecipientResult:
    diagnostic = facts.diagnostic
    if not diagnostic and report.text:
        diagnostic = _diagnostic_from_text(report.text)
    reply_code = facts.reply_code or find_reply_code(_code_prefix(diagnostic))
    # The remote server's own code (the last one quoted, when a relay chain quotes several)
    # is more specific than the Status field the reporting MTA filled in.
    status = find_last_status(diagnostic) or facts.status
    if status is None and report.kind == "text":
        status = find_status(report.text)
    action = facts.action
    if action in ("delivered", "relayed", "expanded"):
        return RecipientResult(
            recipient=facts.recipient,
            action=action,
            status=status,
            reply_code=reply_code,
            hard=None,
            reason=Reason.DELIVERED.value,
            diagnostic=diagnostic,
        )
    if action is None:
        temporary = (status or reply_code or "").startswith("4") or bool(
            TEMPORARY_TEXT_RE.search(report.subject)
        )
        action = "delayed" if temporary and report.kind == "text" else "failed"
    context = _short(report.text)
    command = smtp_command(diagnostic, report.text[:4000])
    remote_host = facts.remote_mta or remote_host_from_text(report.text[:4000])
    provider = server_detail(
        diagnostic, remote_host, address_domain(facts.recipient), status, command
    )
    detail = provider or _generic_failure(status, reply_code, diagnostic, command, context)
    if action == "delayed" and detail in ("undefined", "networkerror", "systemerror"):
        detail = "expired"
    elif (
        not provider
        and action == "failed"
        and detail in ("undefined", "networkerror", "systemerror", "toomanyconn")
        and ((status or "").startswith("4") or (status is None and (reply_code or "")[:1] == "4"))
    ):
        # A final failure with only a temporary answer: the server kept retrying a host that
        # would not answer until the message was too old to keep.
        detail = "expired"
    if detail == "undefined" and (facts.recipient or "").endswith("@googlegroups.com"):
        # Google Groups refuses posts (non-member, closed or missing group) in prose only.
        detail = "rejected"
    if detail == "hostunknown" and (status or "").startswith("4"):
        # "NXDOMAIN" with a temporary status: the sender's resolver will ask again.
        detail = "networkerror"
    if status is None:
        # No code at all: give a pseudo code of the right class so callers can still sort
        # failures by status. Retry exhaustion follows earlier temporary failures.
        temporary = (
            facts.action == "delayed"
            or (reply_code or "").startswith("4")
            or (detail == "expired" and bool(RETRY_TEXT_RE.search(f"{diagnostic or ''} {context}")))
        )
        klass = "4" if temporary else "5"
        status = f"{klass}.0.{PSEUDO_STATUS.get(detail, '900')}"
    reason = DETAIL_TO_REASON.get(detail, Reason.OTHER)
    if detail == "delivered":
        return RecipientResult(
            recipient=facts.recipient,
            action=action,
            status=status,
            reply_code=reply_code,
            hard=None,
            reason=reason.value,
            diagnostic=diagnostic,
        )
    return RecipientResult(
        recipient=facts.recipient,
        action=action,
        status=status,
        reply_code=reply_code,
        # A delay notice is never hard: the server is still trying.
        hard=facts.action != "delayed" and is_hard(detail, status, reply_code),
        reason=reason.value,
        diagnostic=diagnostic,
    )


RETRY_TEXT_RE = re.compile(r"retry timeout|will be retried|still being retried", re.IGNORECASE)


def _short(text: str) -> str:
    # The reporting MTA's own words come first; the rest is quoted detail.
    return text[:1200]


def _code_prefix(diagnostic: str | None) -> str | None:
    # A reply code is only trusted near the start or right before an enhanced status;
    # elsewhere three digits are as likely a port, a size or part of a queue id.
    if not diagnostic:
        return None
    match = re.search(r"(?<![\w.])([245]\d\d)[ -]+[245]\.\d{1,3}\.\d{1,3}", diagnostic)
    if match:
        return match.group(1)
    head = diagnostic[:40]
    match = re.search(r"(?:^|said:|\s)([245]\d\d)(?:[ :-]|$)", head)
    if match:
        return match.group(1)
    # "host mx.example.com[192.0.2.1] said: 550 ...": the server's own answer.
    match = SAID_CODE_RE.search(diagnostic, 0, 300)
    return match.group(1) if match else None


SAID_CODE_RE = re.compile(r"(?:said|answered|returned|replied):\s*'?([245]\d\d)(?:[ :-]|$)")


def _diagnostic_from_text(text: str) -> str | None:
    lines = text.splitlines()
    for line in lines:
        if re.search(r"(?<![\w.])[45]\d\d[ -]", line) or find_status(line):
            return fold(line)
    for line in lines:
        if re.search(r"\b(?:error|reason)\s*:\s*\S", line, re.IGNORECASE):
            return fold(line)
    return None


def classify_bounce(raw: bytes) -> BounceResult:
    """Classify one raw message. Never raises; non-bounces get ``is_bounce=False``."""
    report = parse_report(raw)
    return classify_report(report)


def classify_report(report: ParsedReport) -> BounceResult:
    # Complaints and auto-replies are not bounces, but say whose mail they are about.
    not_a_bounce = {"feedback": Reason.COMPLAINT, "auto_reply": Reason.AUTO_REPLY}
    if report.kind in not_a_bounce:
        first = report.recipients[0].recipient if report.recipients else None
        return replace(NOT_A_BOUNCE, recipient=first, reason=not_a_bounce[report.kind].value)
    if report.kind not in ("dsn", "text") or not report.recipients:
        return NOT_A_BOUNCE
    results = tuple(_classify_recipient(facts, report) for facts in report.recipients)
    failures = [r for r in results if r.reason != Reason.DELIVERED.value]
    first = failures[0] if failures else results[0]
    return BounceResult(
        is_bounce=bool(failures),
        recipient=first.recipient,
        action=first.action,
        status=first.status,
        reply_code=first.reply_code,
        hard=first.hard,
        reason=first.reason,
        diagnostic=fold(first.diagnostic),
        recipients=results,
    )
