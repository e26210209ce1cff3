"""Classify parsed reports: bounce or not, why, and whether the address should be dropped.

Hard/soft is our own policy, not the remote server's label: only failures that say the
address itself is dead (no such user, no such domain, null MX, moved) are hard. Everything
else - full mailboxes, size limits, greylisting, policy and spam blocks, timeouts - is soft,
because retrying later or fixing our side can still succeed. A failure we cannot recognise is
``needs_review`` and never hard: wrongly suppressing a client's address costs more than one
more bounce.

One piece (over 500 lines) on purpose: most of it is the table of patterns (why a
failure is hard, soft or a policy block), and the classifier reads that table in an order
that matters; split, a reader could no longer see which pattern wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from .dsn import (
    DeliveryFacts,
    ParsedReport,
    find_last_status,
    find_reply_code,
    find_status,
    fold,
    parse_report,
)

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

# Causes that mean "this address is dead"; with a permanent (5xx) failure they are hard.
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


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


# Office 365 Directory-Based Edge Blocking: the recipient is not in the tenant's directory.
DIRECTORY_REJECT_RE = re.compile(
    r"5\.4\.1 \[?[^ ]*\]?:? ?recipient address rejected: access denied|"
    r"resolver\.adr\.recipientnotfound",
    re.IGNORECASE,
)

# Diagnostic text beats status codes: servers routinely send 5.1.1 for a full mailbox or
# 5.0.0 for everything. Order matters - the first cause whose pattern matches wins, so the
# specific causes come before the broad ones.
TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("userunknown", DIRECTORY_REJECT_RE),
    (
        "filtered",
        _rx(r"refused due to recipient preferences", r"recipient preferences"),
    ),
    (
        "mailererror",
        _rx(
            r"^x-unix;",
            r"procmail",
            r"couldn't create",
            r"mailer error",
            r"pipe to \|",
            r"local delivery failed",
        ),
    ),
    (
        "mesgtoobig",
        _rx(
            r"message (?:is )?too (?:large|big)",
            r"message size exceeds",
            r"size (?:limit )?exceeded",
            r"message (?:length|size) (?:exceeds|is larger)",
            r"mail size limit",
            r"exceeds? (?:the )?(?:maximum|fixed|size) (?:message )?size",
            r"message exceeds (?:the )?(?:maximum|local) ",
            r"too big for",
        ),
    ),
    (
        "mailboxfull",
        _rx(
            r"mailbox (?:is )?full",
            r"mailbox (?:size|storage) (?:limit|quota)",
            r"over ?quota",
            r"quota (?:exceeded|full)",
            r"exceeded (?:the )?(?:storage|quota)",
            r"(?:user|mailbox|recipient|account)(?:'s)? (?:\w+ )?(?:is )?(?:over|exceeded) "
            r"(?:(?:its|the|their|his|her) )?(?:quota|storage|allocation)",
            r"insufficient (?:system )?storage",
            r"mailbox (?:has )?exceeded",
            r"(?:number|size) of messages in recipient'?s mailbox exceeded",
            r"not enough (?:disk )?space",
            r"mail ?box ?full",
            r"disk quota",
        ),
    ),
    (
        "notcompliantrfc",
        _rx(
            r"not rfc ?(?:5322|2822) compliant",
            r"multiple \S+ headers",
            r"multiple addresses in from",
        ),
    ),
    (
        "badreputation",
        _rx(r"(?:low|bad|poor) reputation", r"ip reputation", r"reputation of the sending"),
    ),
    (
        # DNS blocklists name the sending IP, not the message; they outrank spam wording.
        "blocked",
        _rx(
            r"blocked using",
            r"black ?list",
            r"block ?list(?:ed)?",
            r"\brbl\b",
            r"\bdnsbl\b",
            r"spamhaus",
            r"spamcop",
            r"listed (?:at|in|on|by)",
            r"client host (?:\[[^\]]*\] )?(?:blocked|rejected)",
            r"(?:ip|host) (?:address )?(?:\w+ )?(?:is )?(?:blocked|blacklisted)",
            r"adresse ip source bloquee",
        ),
    ),
    (
        "virusdetected",
        _rx(r"\bvirus\b", r"malware", r"infected", r"\bworm\b"),
    ),
    (
        "spamdetected",
        _rx(
            r"\bspam\b",
            r"junk mail",
            r"content (?:filter )?reject",
            r"message (?:content )?(?:was )?(?:rejected|refused) as spam",
            r"classified as (?:spam|bulk)",
            r"\buce\b",
            r"bulk mail",
            r"considered unsolicited",
            r"spam (?:score|content)",
        ),
    ),
    (
        "authfailure",
        _rx(
            r"\bdmarc\b",
            r"\bspf\b",
            r"\bdkim\b",
            r"sender policy framework",
            r"unauthenticated email",
        ),
    ),
    (
        "requireptr",
        _rx(
            r"reverse dns",
            r"\bptr\b",
            r"no reverse",
            r"cannot find your hostname",
            r"hostname (?:lookup )?(?:does not match|failed)",
            r"client host rejected: cannot find",
        ),
    ),
    (
        "blocked",
        _rx(
            r"please use the smtp server of your isp",
            r"use your isp'?s? (?:smtp|mail) server",
            r"dynamic ip",
            r"residential ip",
            r"access denied",
            r"\bblocked\b",
            r"poor reputation",
        ),
    ),
    (
        "norelaying",
        _rx(
            r"relay(?:ing)? (?:access )?denied",
            r"relay(?:ing)? not permitted",
            r"not (?:allowed|permitted) to relay",
            r"unable to relay",
            r"we do not relay",
            r"relay not allowed",
        ),
    ),
    (
        "rejected",
        _rx(
            r"sender (?:address )?(?:was )?rejected",
            r"unroutable sender",
            r"sender (?:domain|address) (?:\w+ )?(?:does not exist|unknown|invalid)",
            r"domain of sender address .* does not (?:exist|resolve)",
            r"sender verify failed",
            r"from address (?:rejected|invalid)",
            r"rejected for policy reasons",
            r"sender verification",
            r"all recipient addresses rejected",
            r"invalid sender",
            r"send mail as",
            r"customfromdenied",
        ),
    ),
    (
        "hasmoved",
        _rx(r"(?:user|mailbox|address|recipient) has moved", r"has been moved", r"moved to"),
    ),
    (
        "suspend",
        _rx(
            r"account (?:is |has been )?(?:disabled|locked|suspended|inactive|deactivated)",
            r"account that you tried to reach is (?:disabled|inactive)",
            r"temporar(?:il)?y locked",
            r"mailbox (?:is |has been )?(?:disabled|suspended|inactive|locked)",
            r"(?:user|recipient)(?:'s)? (?:account )?(?:is |has been )?"
            r"(?:disabled|suspended|inactive|deactivated)",
            r"account (?:has been )?expired",
            r"mailbox unavailable.*inactive",
            r"recipient suspend",
            r"not active",
            r"temporarily unavailable",
        ),
    ),
    (
        "userunknown",
        _rx(
            r"user(?:name)? (?:is )?unknown",
            r"unknown (?:user|recipient|mailbox|local[- ]part|address)",
            r"no such (?:user|mailbox|recipient|account|address|person)",
            r"user (?:not found|does not exist|doesn't exist)",
            r"(?:recipient|mailbox|address|account|user)(?: address)? "
            r"(?:was )?not (?:found|exist|known|valid)",
            r"(?:mailbox|account|address|recipient|user|destination) (?:\S+ )?"
            r"(?:does not|doesn't) exist",
            r"invalid (?:recipient|mailbox|user|address)",
            r"not a valid (?:mailbox|user|recipient)",
            r"no mailbox",
            r"mailbox unavailable",
            r"unknown or illegal alias",
            r"addressee unknown",
            r"bad destination mailbox",
            r"recipient (?:address )?rejected: (?:user unknown|undeliverable)",
            r"no valid recipients",
            r"recipient not found",
            r"email account that you tried to reach does not exist",
            r"unrouteable address",
            r"address (?:is )?invalid",
            r"user (?:\S+ )?is not (?:known|recognized)",
            r"mailbox not available",
            r"does not have an account",
            r"destination (?:mailbox )?address invalid",
        ),
    ),
    (
        "notaccept",
        _rx(
            r"null mx",
            r"does not accept (?:e-?)?mail",
            r"no smtp service",
            r"couldn't find a mail exchanger",
            r"not accepting (?:network )?(?:messages|mail)",
        ),
    ),
    (
        "hostunknown",
        _rx(
            r"host (?:or domain name )?(?:not found|unknown)",
            r"unknown host",
            r"no such (?:domain|host)",
            r"domain (?:not found|does not exist|unknown)",
            r"name or service not known",
            r"dns lookup failure: host .* not found",
            r"unrouteable (?:mail )?domain",
            r"host .* not found",
            r"nxdomain",
            r"(?:non-?existent|invalid) (?:domain|host)",
            r"no route to domain",
            r"domain (?:is )?not reachable",
        ),
    ),
    (
        "expired",
        _rx(
            r"retry timeout exceeded",
            r"envelope expired",
            r"(?:delivery|message) (?:time )?expired",
            r"message expired",
            r"too long in (?:the )?queue",
            r"has been in the queue too long",
            r"cannot send message for",
            r"could not be delivered within",
            r"retry time not reached",
            r"unable to deliver for \d+",
            r"gave up",
            r"giving up",
            r"queue timeout",
        ),
    ),
    (
        "networkerror",
        _rx(
            r"name service error",
            r"malformed or unexpected name server reply",
            r"no route to host",
            r"connection (?:refused|reset|timed out)",
            r"network (?:is )?unreachable",
            r"host (?:is )?unreachable",
            r"could not connect",
            r"failed to connect",
            r"timed out",
            r"temporary (?:dns|lookup) failure",
            r"mail loop",
            r"loops back to myself",
        ),
    ),
    (
        "toomanyconn",
        _rx(r"too many (?:connections|recipients|messages)", r"connection limit"),
    ),
    (
        "speeding",
        _rx(r"rate limit", r"too fast", r"sending rate", r"temporarily deferred"),
    ),
    (
        "systemfull",
        _rx(r"system full", r"out of (?:disk )?space", r"insufficient system"),
    ),
    (
        "syntaxerror",
        _rx(r"syntax error", r"malformed address", r"command unrecognized"),
    ),
)

# Broad wording that only says "refused somehow"; consulted after the status code.
GENERIC_TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "policyviolation",
        _rx(
            r"policy",
            r"not (?:authorized|allowed|permitted)",
            r"prohibited",
            r"refused",
            r"\bdenied\b",
        ),
    ),
    (
        "systemerror",
        _rx(
            r"system error",
            r"internal (?:server )?error",
            r"local (?:configuration|error)",
            r"server error",
            r"misconfigur",
        ),
    ),
    (
        "filtered",
        _rx(r"filter", r"rejected", r"not delivered", r"refuse"),
    ),
)


COMMAND_RE = re.compile(
    r"(?P<rcpt>in\s+reply\s+to\s+rcpt|after\s+rcpt|rcpt\s+to:?\s*<|"
    r"does\s+not\s+like\s+recipient|did\s+not\s+like\s+our\s+rcpt|smtp:rcpt|"
    r"rcpt\s+command)|"
    r"(?P<data>in\s+reply\s+to\s+(?:end\s+of\s+)?data|after\s+(?:end\s+of\s+)?data|"
    r"failed\s+after\s+i\s+sent\s+the\s+message|data\s+command)|"
    r"(?P<mail>in\s+reply\s+to\s+mail|after\s+mail\s+from|sender\s+was\s+rejected|"
    r"mail\s+from\s+command)",
    re.IGNORECASE,
)
# Sendmail-style transcripts: ">>> COMMAND" followed by the server's "<<< 5xx" answer.
TRANSCRIPT_RE = re.compile(
    r"^>>>\s*(RCPT|DATA|MAIL)\b[^\n]*\n(?:<<<\s*[23]\d\d[^\n]*\n)*<<<\s*[45]\d\d",
    re.IGNORECASE | re.MULTILINE,
)

SENDMAIL_RCPT_ECHO_RE = re.compile(
    r"\b[45]\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3} )?<?[^\s<>]+@[^\s<>]+?>?\.\.\. "
)


@lru_cache(maxsize=128)
def smtp_command(*texts: str | None) -> str | None:
    """The SMTP command the remote server refused, if the report says (first refusal wins)."""
    for text in texts:
        if not text:
            continue
        match = TRANSCRIPT_RE.search(text)
        if match:
            return match.group(1).upper()
        match = COMMAND_RE.search(text)
        if match and match.lastgroup:
            return match.lastgroup.upper()
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
) -> str:
    """The fine-grained cause of one failed delivery (``"undefined"`` when unrecognised)."""
    texts = [t for t in (diagnostic, context) if t]
    # The server's own words first, then its status code, then the reporting MTA's prose.
    detail = _match_specific(diagnostic, status, command)
    if detail:
        return detail
    if status:
        detail = STATUS_TO_DETAIL.get(status)
        if detail:
            return detail
    detail = _match_specific(context, status, command)
    if detail:
        return detail
    for text in texts:
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
    for detail, pattern in TEXT_RULES:
        if not pattern.search(text):
            continue
        if (
            detail == "userunknown"
            and not _address_failure_confirmed(status, command)
            and not DIRECTORY_REJECT_RE.search(text)
        ):
            # "Unknown user" after the recipient was accepted (or with no sign of where it
            # was refused) is how several carriers' content filters answer; it does not
            # prove the mailbox is gone, so it must not drop the address.
            return "filtered"
        return detail
    return None


def _address_failure_confirmed(status: str | None, command: str | None) -> bool:
    if command == "RCPT":
        return True
    if command in ("DATA", "MAIL"):
        return False
    # Only a standard address status counts; vendor codes such as Office 365's 5.1.351
    # merely wrap whatever the next hop said.
    return STATUS_TO_DETAIL.get(status or "") in ("userunknown", "notaccept")


def is_hard(detail: str, status: str | None, reply_code: str | None) -> bool:
    """Only a permanent failure that says the address is dead is hard."""
    if detail not in HARD_DETAILS:
        return False
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
    command = smtp_command(diagnostic, report.text)
    detail = classify_failure(status, reply_code, diagnostic, command, context)
    if action == "delayed" and detail in ("undefined", "networkerror", "systemerror"):
        detail = "expired"
    if status is None:
        # No code at all: give a pseudo code of the right class so callers can still sort
        # failures by status. Retry exhaustion follows earlier temporary failures.
        temporary = (reply_code or "").startswith("4") or (
            detail == "expired" and bool(RETRY_TEXT_RE.search(f"{diagnostic or ''} {context}"))
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
        hard=is_hard(detail, status, reply_code),
        reason=reason.value,
        diagnostic=diagnostic,
    )


RETRY_TEXT_RE = re.compile(r"retry timeout|will be retried|still being retried", re.IGNORECASE)


def _short(text: str) -> str:
    return text[:4000]


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
    return match.group(1) if match else None


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
    if report.kind == "feedback":
        first = report.recipients[0].recipient if report.recipients else None
        return BounceResult(
            is_bounce=False,
            recipient=first,
            action=None,
            status=None,
            reply_code=None,
            hard=None,
            reason=Reason.COMPLAINT.value,
            diagnostic=None,
        )
    if report.kind == "auto_reply":
        first = report.recipients[0].recipient if report.recipients else None
        return BounceResult(
            is_bounce=False,
            recipient=first,
            action=None,
            status=None,
            reply_code=None,
            hard=None,
            reason=Reason.AUTO_REPLY.value,
            diagnostic=None,
        )
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
