"""Which mail server wrote a bounce, and how that server lists its failed recipients.

Standard reports (RFC 3464) need none of this. Prose bounces do: each MTA family words and
lays out its report its own way, so the report is first matched to a family by its headers
and opening lines, then read with that family's recipient patterns. What a family looks like
was written for this project from how the servers themselves word their reports (the
approach of Sisimai's per-MTA ``Lhost`` modules; no code or data copied from it).

A family that is not recognised falls back to the general scanner in :mod:`.dsn`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .vocabulary import Prefiltered

__all__ = [
    "CHALLENGE_RE",
    "DELAY_RE",
    "MTA_FAMILIES",
    "MtaFamily",
    "detect_mta",
]

_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_I = re.IGNORECASE
_IM = re.IGNORECASE | re.MULTILINE


@dataclass(frozen=True)
class MtaFamily:
    """One family of bounce writers.

    ``headers`` is matched against a digest of the report's own headers (From, Subject,
    X-Mailer, Received, Message-Id), ``body`` against the first lines of its prose; either
    one matching identifies the family. ``recipients`` find the failed addresses in the prose
    (group ``addr``) in the order the server lists them; a pattern with a ``why`` group
    reads a one-line verdict (the code, if grouped as ``code``, and the reason) and nothing
    after it.
    """

    name: str
    headers: re.Pattern[str] | None
    body: re.Pattern[str] | None
    recipients: tuple[re.Pattern[str], ...] = ()


def _rx(pattern: str, flags: int = _IM) -> re.Pattern[str]:
    return re.compile(pattern, flags)


MTA_FAMILIES: tuple[MtaFamily, ...] = (
    MtaFamily(
        "qmail",
        _rx(r"^received: \(qmail \d+ invoked for bounce\)"),
        _rx(r"this is the qmail-send program|i'm afraid i wasn't able to deliver your message"),
        (_rx(rf"^<(?P<addr>{_ADDR})>:?[ \t]*$"),),
    ),
    MtaFamily(
        "postfix",
        None,
        _rx(
            r"^this is the (?:mail system|postfix program) at host|^the (?:mail system|postfix "
            r"program)\s*$"
        ),
        (_rx(rf"^<(?P<addr>{_ADDR})>(?: \(expanded from <[^>]*>\))?:"),),
    ),
    MtaFamily(
        "exim",
        _rx(r"^x-failed-recipients:"),
        _rx(
            r"this message was created automatically by mail delivery software|"
            r"^a message that you sent (?:could not be delivered|has not yet been delivered)"
        ),
        (_rx(rf"^[ \t]+(?P<addr>{_ADDR})(?:[ \t]*$|[ \t]*\n|[ \t]+<)"),),
    ),
    MtaFamily(
        "sendmail",
        None,
        _rx(
            r"the original message was received at|"
            r"-{3,} the following addresses had (?:permanent fatal|transient non-fatal) errors|"
            # Sendmail V5 and its descendants: a transcript, then the unsent message.
            r"-{3,} transcript of session follows -{3,}"
        ),
        (
            _rx(
                r"-{3,} the following addresses had (?:permanent fatal|transient non-fatal) "
                rf"errors -{{3,}}\s*\n[ \t]*<?(?P<addr>{_ADDR})"
            ),
            # Sendmail's own verdict lines, one per refused recipient: "550 <a@b>... why"
            # (V5 writes the address without brackets).
            _rx(
                rf"^(?P<code>[0-9]{{3}})[ -](?:[0-9.]+ )?<?(?P<addr>{_ADDR})>?\.\.\.(?P<why>[^\n]*)"
            ),
        ),
    ),
    MtaFamily(
        "exchange",
        _rx(r"^x-mailer: microsoft exchange"),
        _rx(
            r"did not reach the following recipient|"
            r"delivery has failed to these recipients or (?:groups|distribution lists)|"
            r"your message did not reach some or all of the intended recipients|"
            r"the following recipient\(s\) could not be reached"
        ),
        (
            _rx(
                r"(?:did not reach the following recipient\(s\)|could not be reached)"
                rf":?\s*\n(?:\s*\n)*[ \t]*(?P<addr>{_ADDR})"
            ),
            _rx(rf"^[ \t]*(?P<addr>{_ADDR}) on \S+"),
            _rx(
                r"delivery has failed to these recipients or (?:groups|distribution lists):"
                rf"\s*\n(?:\s*\n)*[^\n]*?\(?(?P<addr>{_ADDR})"
            ),
        ),
    ),
    MtaFamily(
        "gmail",
        _rx(r"^from:.*mailer-daemon@(?:googlemail|google)\.com"),
        _rx(
            r"delivery to the following recipients? (?:failed|has been delayed)|"
            r"^\*\* (?:address not found|message not delivered|delivery incomplete) \*\*"
        ),
        (
            _rx(
                r"delivery to the following recipients? (?:failed|has been delayed)[^\n]*"
                rf"\s*\n(?:\s*\n)*[ \t]*(?P<addr>{_ADDR})"
            ),
            _rx(rf"your message (?:wasn't|was not|hasn't been) delivered to (?P<addr>{_ADDR})"),
        ),
    ),
    MtaFamily(
        "yahoo",
        _rx(r"^from:.*mailer-daemon@.*yahoo"),
        _rx(r"^message from yahoo\.com|sorry, we were unable to deliver your message"),
        (_rx(rf"^[ \t]*<?(?P<addr>{_ADDR})>?:?[ \t]*$"),),
    ),
    MtaFamily(
        "domino",
        _rx(r"^x-mailer: lotus domino|^x-mimetrack:"),
        _rx(r"^your message\s*$|was not delivered to:"),
        (_rx(rf"was not delivered to:\s*\n(?:\s*\n)*[ \t]*<?(?P<addr>{_ADDR})"),),
    ),
    MtaFamily(
        "courier",
        _rx(r"^from: courier mail server|courier mta"),
        _rx(r"this is a delivery status notification from|courier mail server at"),
        (_rx(rf"^<(?P<addr>{_ADDR})>:?[ \t]*$"),),
    ),
    MtaFamily(
        "opensmtpd",
        None,
        _rx(r"this is the mailer-daemon at|^hi!\s*\n\s*\nthis is the mailer-daemon"),
        (_rx(rf"^(?:error for )?<?(?P<addr>{_ADDR})>?[: ]"),),
    ),
    MtaFamily(
        "zoho",
        _rx(r"^from:.*@zoho(?:mail)?\.|^x-zohomail"),
        _rx(r"this message was created automatically by mail delivery software \(zoho"),
        (_rx(rf"^[ \t]*(?P<addr>{_ADDR}),?\s*(?:invalid address|reason)"),),
    ),
    MtaFamily(
        "james",
        None,
        _rx(r"^error message below:|^message details:\s*$"),
        (_rx(rf"^[ \t]*rcpt to:[ \t]*<?(?P<addr>{_ADDR})"),),
    ),
    MtaFamily(
        "imail",
        _rx(r"^x-mailer: <?(?:smtp32|imail)"),
        _rx(
            r"^(?:invalid final delivery userid|user mailbox exceeds allowed size|"
            r"unknown user|undeliverable to|delivery failed|requested action not taken)"
        ),
        (
            _rx(
                r"(?:invalid final delivery userid|user mailbox exceeds allowed size|"
                r"unknown user|undeliverable to|user not found|delivery failed|"
                rf"mailbox full)[^\n@]*?:?[ \t]*<?(?P<addr>{_ADDR})"
            ),
        ),
    ),
    MtaFamily(
        "fml",
        _rx(r"^x-ml-server: fml|^x-mlserver:|^list-software: fml"),
        _rx(r"fml system|^your mail to (?:the )?(?:ml|mailing list)"),
        (_rx(rf"<(?P<addr>{_ADDR})>"),),
    ),
    MtaFamily(
        "aol",
        _rx(r"^from:.*mailer-daemon@aol\.com"),
        _rx(r"this message was undeliverable due to the following reason"),
        (_rx(rf"^[ \t]*<?(?P<addr>{_ADDR})>?[ \t]*$"),),
    ),
    MtaFamily(
        "mailru",
        _rx(r"^from:.*mailer-daemon@(?:corp\.)?mail\.ru|^from:.*@(?:inbox|list|bk)\.ru"),
        _rx(r"message was not accepted -- invalid mailbox|сообщение не (?:может быть )?доставлено"),
        (
            _rx(rf"local mailbox (?P<addr>{_ADDR}) is unavailable"),
            _rx(rf"^[ \t]*<?(?P<addr>{_ADDR})>?:?[ \t]*$"),
        ),
    ),
    MtaFamily(
        "sina",
        _rx(r"^from:.*mailer-daemon@sina\.com"),
        None,
        (_rx(rf"<(?P<addr>{_ADDR})>"),),
    ),
    MtaFamily(
        "hotpop",
        _rx(r"^from:.*@hotpop\.com"),
        None,
        (_rx(rf"<?(?P<addr>{_ADDR})>?"),),
    ),
    MtaFamily(
        "appliance",
        _rx(
            r"^x-mailer: (?:interscan|imss|mfilter|barracuda|sophos|mailshield)|"
            r"^from:.*(?:messagelabs|mimecast|proofpoint|barracuda|interscan)"
        ),
        _rx(
            r"interscan|trend micro|message from mailshield|mfilter|barracuda|sophos email|"
            r"messagelabs|this is the mail delivery agent at"
        ),
        (
            _rx(rf"(?:^|\n)[ \t]*(?:to|rcpt to|recipient):?[ \t]*<?(?P<addr>{_ADDR})"),
            _rx(rf"^[ \t]*<?(?P<addr>{_ADDR})>?"),
        ),
    ),
    MtaFamily(
        "japanese",
        None,
        _rx(
            "\u9001\u4fe1\u3067\u304d\u307e\u305b\u3093|"  # could not send
            "\u914d\u9001\u3067\u304d\u307e\u305b\u3093|"  # could not deliver
            "\u5b9b\u5148\u4e0d\u660e|"  # addressee unknown
            "\u914d\u4fe1\u3067\u304d\u307e\u305b\u3093|"
            "\u30a8\u30e9\u30fc\u30e1\u30fc\u30eb",  # error mail
        ),
        (_rx(rf"<?(?P<addr>{_ADDR})>?"),),
    ),
)

# Delay notices: the server still holds the message and will retry. Soft, never hard.
# Prefiltered: run only when the text holds a literal some phrase needs (see vocabulary.py).
DELAY_RE = Prefiltered(
    re.compile(
        r"has not yet been delivered|not been delivered yet|"
        r"will (?:keep|continue) (?:trying|to try|attempting)|"
        r"(?:delivery|it) will be (?:re)?tried|will be retried|still (?:being )?retr|"
        r"delivery attempts will continue|is still trying|delivery (?:is |has been )?delayed|"
        r"message (?:is |has been )?delayed|delayed mail|warning: message .{0,80} delayed|"
        r"this is a warning message only|transient non-fatal errors|"
        r"no action is required on your part|temporary (?:failure|problem)s?\b.{0,80}retry|"
        r"will retry (?:for|until|later)|retrying|still undelivered|still awaiting delivery|"
        r"will keep trying until|could not send message for past|warning: could not send|"
        r"has been delayed|delivery delay|will continue to be made|not yet delivered",
    )
)

# Challenge/response systems ask the sender to prove they are human; nothing bounced.
CHALLENGE_RE = Prefiltered(
    re.compile(
        r"boxbe|requires? (?:your )?confirmation|please confirm (?:that )?you|"
        r"verify (?:that )?you are (?:a )?(?:human|real)|"
        r"awaiting (?:your )?(?:verification|approval)|"
        r"sender (?:verification|approval) (?:request|required)|"
        r"click (?:the|this) link (?:below )?to (?:confirm|verify|deliver)|"
        r"added to (?:my|the) (?:approved|guest) (?:senders? )?list|spam arrest|mailblocks|"
        r"choicemail|challenge.?response",
    )
)


def _alternatives(pattern: str) -> list[str]:
    """``pattern`` split at its top-level "|" (outside groups and character classes)."""
    parts: list[str] = []
    depth = 0
    in_class = False
    start = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern.startswith(("[]", "[^]"), index):
                index += 2 if pattern[index + 1] == "]" else 3
                continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
        index += 1
    parts.append(pattern[start:])
    return parts


def _header_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The families' header patterns in two passes: line-anchored ones, then the rest.

    Header lines are matched in "\n" + digest with "^" written as "\n", and that "\n"
    factored out in front of all the alternatives: with a literal first character the regex
    engine skips from line to line instead of trying each alternative at every character
    (it cannot see a literal inside the named groups). The few unanchored phrases ("courier
    mta") go in a second pattern; it cannot tie with the first (which only matches at a
    newline), so the earlier of the two matches is the one a single pattern would find.
    Group fN is family N's pattern. Lower-case patterns for lower-cased text (the caller
    lowers it): much faster than IGNORECASE.
    """
    anchored: list[str] = []
    floating: list[str] = []
    for index, family in enumerate(MTA_FAMILIES):
        if family.headers is None:
            continue
        alternatives = _alternatives(family.headers.pattern)
        lines = [a for a in alternatives if a.startswith("^")]
        rest = [a for a in alternatives if not a.startswith("^")]
        if lines:
            # "^" inside an alternative's own groups is a line start too.
            inner = "|".join(re.sub(r"(\||\()\^", r"\1\\n", a[1:]) for a in lines)
            anchored.append(f"(?P<f{index}>{inner})")
        if rest:
            floating.append(f"(?P<f{index}>{'|'.join(rest)})")
    return (
        re.compile("\n(?:" + "|".join(anchored) + ")", re.MULTILINE),
        re.compile("|".join(floating) or "(?!)", re.MULTILINE),
    )


_HEADERS_RE, _FLOATING_HEADERS_RE = _header_patterns()
# Each family's opening-prose pattern, case-sensitive for lower-cased text, and run only
# when the text holds a literal it needs (see vocabulary.Prefiltered): most prose names
# no family at all, or one.
_BODY_PATTERNS = tuple(
    (index, Prefiltered(re.compile(family.body.pattern, re.MULTILINE)))
    for index, family in enumerate(MTA_FAMILIES)
    if family.body is not None
)


def detect_mta(header_digest: str, body_head: str) -> MtaFamily | None:
    """The family whose headers, else whose opening prose, match first; ``None`` if none.

    Both texts must be lower-cased; so must text given to DELAY_RE and CHALLENGE_RE.
    """
    text = "\n" + header_digest
    match = _HEADERS_RE.search(text)
    floating = _FLOATING_HEADERS_RE.search(text)
    if floating and (match is None or floating.start() < match.start()):
        match = floating
    if match is not None and match.lastgroup:
        return MTA_FAMILIES[int(match.lastgroup[1:])]
    # The family whose pattern matches earliest, the first listed on a tie: what one
    # alternation of all the families' patterns would find, without trying every family's
    # phrases at every character.
    best: tuple[int, int] | None = None
    for index, pattern in _BODY_PATTERNS:
        found = pattern.search(body_head)
        if found is not None and (best is None or found.start() < best[0]):
            best = (found.start(), index)
    return MTA_FAMILIES[best[1]] if best else None
