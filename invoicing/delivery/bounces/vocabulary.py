"""The reason vocabulary: how mail servers word each cause of failure.

Each cause (named as in Sisimai, so the labelled corpora compare directly) has the phrases
servers use for it. The list is built from how MTAs and mailbox providers word their
refusals; many phrases are the ones Sisimai's ``Sisimai::Reason::*`` modules also look for.
Written for this project, not copied; where a phrase list follows Sisimai's, its licence
applies to that list:

    Sisimai - Copyright (C) 2014-2024 azumakuniyuki and sisimai development team.
    BSD 2-Clause licence: Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions are met:
    1. Redistributions of source code must retain the above copyright notice, this list of
       conditions and the following disclaimer.
    2. Redistributions in binary form must reproduce the above copyright notice, this list of
       conditions and the following disclaimer in the documentation and/or other materials
       provided with the distribution.
    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY
    EXPRESS OR IMPLIED WARRANTIES ... ARE DISCLAIMED (full text: the BSD 2-Clause licence).
"""

from __future__ import annotations

import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]

__all__ = [
    "DIRECTORY_REJECT_RE",
    "GENERIC_TEXT_RULES",
    "TEXT_RULES",
    "Phrases",
    "Prefiltered",
    "required_literals",
]


_REGEX_SYNTAX = re.compile(r"[\\\[\](){}.*+?|^$]")
# A literal shorter than this says little (" a", "re"); such alternatives are not prefiltered.
_MIN_ANCHOR = 3


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Substrings at least one of which is in any text ``pattern`` matches; None if unknown.

    Python's regex engine tries every alternative of a long alternation at every position of
    the text; most texts contain none of the words the alternatives are built around, and
    ``in`` finds that out several times faster. Read from the compiled pattern's own parse
    tree, so the prefilter cannot drift from the pattern it guards.
    """
    if pattern.flags & re.IGNORECASE:
        return None  # an ``in`` test would be case-sensitive where the pattern is not
    try:
        tree = sre_parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # a parser internals change: no prefilter, same results
        return None
    found = _anchors(list(tree))
    if not found:
        return None
    # A literal that contains another one is redundant: the shorter is found whenever it is.
    return tuple(sorted(a for a in found if not any(b != a and b in a for b in found)))


def _anchors(items: list) -> set[str] | None:
    """For a sequence of parse items: one required literal run, else a required group's."""
    runs: list[str] = []
    run: list[str] = []
    groups: list[set[str] | None] = []
    for op, av in items:
        if op is sre_constants.LITERAL:
            run.append(chr(av))
            continue
        runs.append("".join(run))
        run = []
        if op is sre_constants.SUBPATTERN:
            _group, add_flags, _del_flags, sub = av
            if not add_flags & sre_constants.SRE_FLAG_IGNORECASE:
                groups.append(_anchors(list(sub)))
        elif op is sre_constants.BRANCH:
            groups.append(_branch(av[1]))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[0] >= 1:
            groups.append(_anchors(list(av[2])))
    runs.append("".join(run))
    best = max(runs, key=len)
    if len(best) >= _MIN_ANCHOR:
        return {best}
    for group in groups:
        if group:
            return group
    return None


def _branch(alternatives: list) -> set[str] | None:
    found: set[str] = set()
    for alternative in alternatives:
        anchors = _anchors(list(alternative))
        if not anchors:
            return None  # one alternative could match without any known literal
        found |= anchors
    return found


class Prefiltered:
    """A compiled pattern that is only run when the text holds one of its required literals.

    Behaves as the pattern for ``search`` (same match or ``None``).
    """

    __slots__ = ("anchors", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.anchors = required_literals(pattern)

    def search(self, text: str, *args: int) -> re.Match[str] | None:
        anchors = self.anchors
        if anchors is not None:
            for anchor in anchors:
                if anchor in text:
                    break
            else:
                return None
        return self.pattern.search(text, *args)


class Phrases:
    """One cause's phrases: plain ones found with ``in``, the rest with small regexes.

    All lower-case, for lower-cased text with a space in front (``rules._match_specific``
    does that): a word boundary is written "[^a-z0-9_]word". Substring search is several
    times faster than a regex alternative, so each regex phrase is only tried when the text
    holds a literal it cannot match without (phrases sharing that literal share one regex).
    """

    __slots__ = ("guarded", "literals", "pattern", "unguarded")

    def __init__(self, *alternatives: str) -> None:
        self.literals = tuple(a for a in alternatives if not _REGEX_SYNTAX.search(a))
        by_anchors: dict[tuple[str, ...], list[str]] = {}
        unguarded: list[str] = []
        for alternative in alternatives:
            if alternative in self.literals:
                continue
            anchors = required_literals(re.compile(alternative))
            if anchors:
                by_anchors.setdefault(anchors, []).append(alternative)
            else:
                unguarded.append(alternative)
        self.guarded = tuple(
            (anchors, re.compile("|".join(group))) for anchors, group in by_anchors.items()
        )
        self.unguarded = re.compile("|".join(unguarded)) if unguarded else None
        self.pattern = "|".join(alternatives)

    def search(self, text: str) -> bool:
        for literal in self.literals:
            if literal in text:
                return True
        for anchors, regex in self.guarded:
            for anchor in anchors:
                if anchor in text:
                    if regex.search(text):
                        return True
                    break
        return bool(self.unguarded is not None and self.unguarded.search(text))


def _rx(*alternatives: str) -> Phrases:
    return Phrases(*alternatives)


# Office 365 Directory-Based Edge Blocking: the recipient is not in the tenant's directory.
DIRECTORY_REJECT_RE = re.compile(
    r"recipient address rejected: access denied|"
    r"resolver\.adr\.recipientnotfound"
)

# qmail's and others' "gave up after the queue lifetime" outranks a vague last attempt
# ("resources temporarily unavailable"), not a specific one such as a full mailbox.
QUEUE_EXPIRY = _rx(
    r"in the queue too long",
    r"not going to try again",
    r"did not accept our requests to connect",
)

# Diagnostic text beats status codes: servers routinely send 5.1.1 for a full mailbox or
# 5.0.0 for everything. Order matters - the first cause whose pattern matches wins, so the
# specific causes come before the broad ones.
TEXT_RULES: tuple[tuple[str, Phrases | re.Pattern[str]], ...] = (
    ("userunknown", DIRECTORY_REJECT_RE),
    (
        "filtered",
        _rx(r"refused due to recipient preferences", r"recipient preferences"),
    ),
    (
        "mailererror",
        _rx(
            r"x-unix;",
            r"procmail",
            r"couldn't create",
            r"mailer error",
            r"pipe to \|",
            r"local delivery failed",
        ),
    ),
    (
        # A full mailbox says "size limit" too; it must not read as a message too large.
        "mailboxfull",
        _rx(r"mailbox size limit", r"mailbox (?:is )?full", r"mailbox quota"),
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
            r"[^a-z0-9_]rbl\b",
            r"[^a-z0-9_]dnsbl\b",
            r"spamhaus",
            r"spamcop",
            r"(?<!not )listed (?:at|in|on|by)",  # a blocklist; "not listed in" is a directory
            r"client host (?:\[[^\]]*\] )?(?:blocked|rejected)",
            r"(?:ip|host) (?:address )?(?:\w+ )?(?:is )?(?:blocked|blacklisted)",
            r"adresse ip source bloquee",
        ),
    ),
    (
        "virusdetected",
        _rx(r"[^a-z0-9_]virus\b", r"malware", r"infected", r"[^a-z0-9_]worm\b"),
    ),
    (
        "spamdetected",
        _rx(
            r"[^a-z0-9_]spam\b",
            r"junk mail",
            r"content (?:filter )?reject",
            r"message (?:content )?(?:was )?(?:rejected|refused) as spam",
            r"classified as (?:spam|bulk)",
            r"[^a-z0-9_]uce\b",
            r"bulk mail",
            r"considered unsolicited",
            r"spam (?:score|content)",
        ),
    ),
    (
        "authfailure",
        _rx(
            r"[^a-z0-9_]dmarc\b",
            r"[^a-z0-9_]spf\b",
            r"[^a-z0-9_]dkim\b",
            r"sender policy framework",
            r"unauthenticated email",
        ),
    ),
    (
        "requireptr",
        _rx(
            r"reverse dns",
            r"[^a-z0-9_]ptr\b",
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
            r"[^a-z0-9_]blocked\b",
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
            r"sender domain must (?:exist|resolve)",
            r"envelope sender (?:domain )?(?:is )?(?:invalid|rejected|unknown)",
            r"from address (?:rejected|invalid)",
            r"rejected for policy reasons",
            r"sender verification",
            r"all recipient addresses rejected",
            r"invalid sender",
            r"send mail as",
            r"customfromdenied",
            r"(?:not have|without) permission to post",
            r"from:? (?:domain|address) (?:is )?invalid",
            r"provide a valid from",
            r"group you tried to contact",
        ),
    ),
    (
        "hasmoved",
        _rx(r"(?:user|mailbox|address|recipient) has moved", r"has been moved", r"moved to"),
    ),
    ("expired", QUEUE_EXPIRY),
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
            r"address (?:is )?invalid",
            r"user (?:\S+ )?is not (?:known|recognized)",
            r"mailbox not available",
            r"does not have an account",
            r"destination (?:mailbox )?address invalid",
            r"invalid final delivery userid",
            r"check (?:if|that|whether) (?:the )?(?:e-?mail )?address is (?:correct|valid)",
            r"is not a known user",
            r"not (?:a )?known (?:user|recipient|mailbox)",
            r"deactivated (?:mailbox|account|user)",
            r"mailbox (?:is )?(?:currently )?unavailable",
            r"(?:recipient|user|mailbox) name is not recognized",
            r"(?:doesn't|does not) have an? (?:\S+ ){0,3}account",
            r"(?:account|mailbox|recipient|user|address) (?:\S+ )?(?:does not|doesn't) exist",
            r"recipient address rejected(?:\.|: (?:unknown|undeliverable|invalid))",
            r"invalid (?:user|recipient) address",
            r"unknown local[- ]?part",
            r"user (?:is )?not (?:found|listed|here)",
            r"no such (?:local )?user",
            r"address (?:unknown|not found)",
            r"this (?:user|address|account) (?:does not|doesn't) exist",
            r"mailbox not found",
            r"user (?:account )?(?:is )?(?:expired|unavailable)",
            r"no (?:such )?recipient here",
            # Lotus Notes/Domino looks the address up in its directory (the NAB).
            r"not listed in (?:the )?(?:domino )?directory",
            r"not listed in (?:the )?public name (?:&|and) address book",
            # The same verdict in the languages servers most often answer in.
            r"(?:empf(?:\u00e4|ae)nger|benutzer|adresse|postfach) (?:ist )?unbekannt",
            r"unbekannte[rs]? (?:empf(?:\u00e4|ae)nger|benutzer|adresse)",
            r"destinataire inconnu",
            r"(?:adresse|utilisateur|bo\u00eete(?: aux lettres)?) (?:de destination )?"
            r"(?:inconnue?|inexistante?)",
            r"usuario (?:desconocido|inexistente|no existe)",
            r"(?:usu\u00e1rio|destinat\u00e1rio) (?:desconhecido|inexistente)",
            r"utente (?:sconosciuto|inesistente)",
            r"nessun utente",
            r"(?:adres|gebruiker|ontvanger) (?:is )?onbekend",
            r"(?:u\u017cytkownik|adresat) nie istnieje",
            r"nieznany (?:u\u017cytkownik|adresat)",
            # Japanese: "(the address) does not exist", "addressee unknown".
            "\u5b58\u5728\u3057\u307e\u305b\u3093",
            "\u5b9b\u5148\u4e0d\u660e",
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
        # Temporary name-service trouble reads like a dead domain; it is not one.
        "networkerror",
        _rx(
            r"not found, try again",
            r"temporary (?:dns|lookup|name) (?:failure|error)",
            r"dns (?:lookup )?(?:temporary )?failure.*try again",
        ),
    ),
    (
        "hostunknown",
        _rx(
            r"host (?:or domain name )?(?:not found|unknown)",
            r"unrouteable address",
            r"no mx (?:record|host)s?",
            r"mx (?:record )?lookup fail",
            r"[ <(\[](?:[a-z0-9-]+\.)+[a-z]{2,}\.? (?:does not exist|not found|is unknown)",
            r"domain (?:name )?(?:is )?(?:invalid|unknown|not registered)",
            r"unknown domain",
            r"domain (?:\S+ )?(?:does not|doesn't) (?:exist|resolve)",
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
            r"failing for a long time",
            r"retry time not reached for any host",
            r"(?:delivery|message) (?:time )?expired",
            r"message expired",
            r"too long in (?:the )?queue",
            r"has been in the queue too long",
            r"cannot send message for",
            r"could not be delivered within",
            r"retry time not reached",
            r"unable to deliver for \d+",
            r"queue timeout",
        ),
    ),
    (
        "networkerror",
        _rx(
            r"name service error",
            r"malformed or unexpected name server reply",
            r"no route to host",
            r"host not reachable",
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
GENERIC_TEXT_RULES: tuple[tuple[str, Phrases | re.Pattern[str]], ...] = (
    (
        "policyviolation",
        _rx(
            r"policy",
            r"not (?:authorized|allowed|permitted)",
            r"prohibited",
            r"refused",
            r"[^a-z0-9_]denied\b",
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
