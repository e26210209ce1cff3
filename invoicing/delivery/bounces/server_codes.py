"""Large receivers' own error codes and wording ("remote host" knowledge).

Mailbox providers put their own codes into SMTP replies - La Poste's ``LPN007_416``, Cox's
``AUP#CXBL``, GoDaddy's ``IB607``, Exchange Online's ``RESOLVER.ADR.RecipientNotFound`` - and
word their refusals in their own fixed phrases. Both name the cause more precisely than the
enhanced status code (Orange says "user unknown" with 5.5.0, GoDaddy says "too many
recipients this hour" with 5.1.1), so when one is present it decides the cause before the
generic vocabulary does.

Codes that only one provider uses (``LPN\\d{3}_\\d{3}``, ``AUP#``, ``RESOLVER.``, the i.ua error
URL) are trusted wherever they appear: relays quote them from the provider's reply. Short or
generic-looking codes and phrases (``IB103``, "account disabled") only count when the
provider is the remote host: the DSN's Remote-MTA, the host named in the prose ("host
mx.example.com[192.0.2.1] said:"), a host name of the provider's inside the reply, or the
recipient's domain.

The tables were written for this project from the providers' published error-code pages and
from Sisimai's ``Sisimai::Rhost::*`` modules (FrancePTT, Cox, GoDaddy, Spectrum, Tencent,
Mimecast, Apple, YahooInc, Aol, Google, Microsoft, MessageLabs, IUA, Outlook, Zoho, Facebook,
Cloudflare, NTTDOCOMO), which collect them; no code was copied, but where a table follows
Sisimai's, its licence applies to that table:

    Sisimai - Copyright (C) 2014-2025 azumakuniyuki and sisimai development team.
    BSD 2-Clause licence: Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions are met:
    1. Redistributions of source code must retain the above copyright notice, this list of
       conditions and the following disclaimer.
    2. Redistributions in binary form must reproduce the above copyright notice, this list of
       conditions and the following disclaimer in the documentation and/or other materials
       provided with the distribution.
    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY
    EXPRESS OR IMPLIED WARRANTIES ... ARE DISCLAIMED (full text: the BSD 2-Clause licence).

Every detail returned is one of the cause names ``rules`` uses (see ``DETAIL_TO_REASON``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["PROVIDERS", "Provider", "remote_host_from_text", "server_detail"]


# --- Codes only one provider uses: trusted wherever they appear -------------------------------

# Orange and La Poste (France): "LPN007_416", "OFR005_505", "OFR_416", "OUK_513", "LPN416".
# The last three digits name the cause; codes that only say "try later" map to None, which
# leaves the cause to the generic rules. After Sisimai::Rhost::FrancePTT (BSD-2-Clause).
FRANCE_PTT_RE = re.compile(
    r"(?<![a-z0-9])(?:lpnaaa|lpn|ofr|ouk)(?:\d{3}[-_](\d{3})|_?(\d{3}))(?![0-9])"
)
FRANCE_PTT_CODES: dict[str, str | None] = {
    "101": "blocked",  # sending IP listed on a public block list
    "102": "blocked",  # source IP blocked for spam incidents
    "103": "blocked",  # service refused
    "104": "toomanyconn",  # too many connections, slow down
    "105": None,  # try later
    "107": None,
    "108": None,
    "109": None,
    "201": None,
    "305": "securityerror",  # invalid authentication code
    "401": "blocked",  # SPF: not allowed to send
    "402": "securityerror",  # authentication required
    "403": "rejected",  # invalid sender
    "405": "rejected",
    "415": "rejected",
    "416": "userunknown",  # invalid recipient
    "417": "mailboxfull",  # recipient over quota
    "418": "userunknown",
    "420": "suspend",  # archived recipient
    "421": "rejected",  # MAIL FROM not owned by the user
    "423": None,
    "424": None,
    "426": "suspend",  # recipient account blocked
    "505": "systemerror",  # service refused (temporary)
    "506": "spamdetected",  # mail rejected
    "510": "blocked",
    "513": None,
    "514": "mesgtoobig",  # size limit reached
    "517": "policyviolation",  # DMARC verification failed
    "630": "policyviolation",  # client host rejected
    "999": "blocked",
}

# Cox ("AUP#CXBL") and Spectrum/Charter ("AUP#In-1310", "AUP#O-1000"): both write "AUP#".
# Cox's codes are words, Spectrum's four digits. After Sisimai::Rhost::Cox and ::Spectrum
# (BSD-2-Clause), themselves from cox.com's and spectrum.net's error-code pages.
AUP_RE = re.compile(r"aup#([a-z0-9-]+)")
COX_CODES: dict[str, str] = {
    "cxbl": "blocked",  # sending IP blocked for spam-like behaviour
    "cdrbl": "blocked",  # temporary block of the same kind
    "cxdns": "requireptr",  # reverse DNS of the sending IP fails
    "cxsndr": "authfailure",  # SPF/DKIM of the sending domain failed
    "cxsmtp": "rejected",  # SMTP protocol violation
    "cxcnct": "toomanyconn",  # too many concurrent connections
    "cxmxrt": "toomanyconn",  # too many recipients, wait before sending more
    "cxthrt": "securityerror",  # sending limited for suspicious account activity
    "cxmj": "securityerror",
}
COX_PREFIXES: tuple[tuple[str, str], ...] = (
    ("ipbl", "blocked"),  # IPBL0001...IPBL1111: the sending IP is on DNS block lists
    ("urlbl", "spamdetected"),  # URLBL...: a URL in the body is on block lists
)
# Spectrum: (first, last, cause) ranges of four-digit codes.
SPECTRUM_RANGES: tuple[tuple[int, int, str], ...] = (
    (1000, 1000, "blocked"),  # IP blocked for suspicious activity
    (1010, 1080, "rejected"),  # the sending account is blocked or limited
    (1090, 1090, "systemerror"),  # cannot be processed now
    (1100, 1150, "requireptr"),  # no full-circle DNS for the sending IP
    (1160, 1190, "policyviolation"),  # against the sending domain's security policy
    (1200, 1250, "blocked"),  # Cloudmark CSI or Spamhaus listing
    (1260, 1260, "networkerror"),  # IPv6 not accepted
    (1300, 1340, "toomanyconn"),  # too many connections
    (1350, 1490, "speeding"),  # too many messages or recipients
    (1500, 1520, "rejected"),  # sending as an address not signed in with
    (1530, 1530, "mesgtoobig"),  # over 20 MB
    (1540, 1550, "speeding"),
    (1560, 1560, "policyviolation"),  # too many invalid recipients
    (1580, 1580, "speeding"),
)

# i.ua (Ukraine) links each refusal to "mail.i.ua/err/N/". After Sisimai::Rhost::IUA.
IUA_RE = re.compile(r"i\.ua/err/(\d{1,2})(?!\d)")
IUA_CODES: dict[str, str] = {
    "1": "norelaying",  # SMTP as a mail gate is forbidden
    "2": "userunknown",  # user not found
    "3": "suspend",  # mailbox unused for more than three months (frozen)
    "4": "mailboxfull",
    "5": "toomanyconn",  # sending limit exceeded
    "6": "norelaying",
    "7": "blocked",  # bad HELO
    "8": "rejected",  # sender address could not be checked
    "9": "blocked",  # sender IP blacklisted
    "10": "filtered",  # not in the recipient's allowed list
}

# Exchange / Exchange Online transport component codes. After Sisimai::Rhost::Microsoft and
# Microsoft's "non-delivery reports in Exchange Online" pages.
EXCHANGE_CODES: tuple[tuple[str, str], ...] = (
    ("resolver.adr.exrecipnotfound", "userunknown"),
    ("resolver.adr.recipientnotfound", "userunknown"),
    ("resolver.adr.recipnotfound", "userunknown"),
    ("resolver.adr.reciplimit", "toomanyconn"),
    ("resolver.rst.recipsizelimit", "exceedlimit"),
    ("resolver.rst.sendsizelimit", "mesgtoobig"),
    ("resolver.rst.authrequired", "rejected"),
    ("resolver.rst.notauthorized", "rejected"),
    ("resolver.rst.sendernotauthenticated", "rejected"),
    ("resolver.rst.restrictedtorecipientspermission", "rejected"),
    ("storedrv.submit; invalid recipient address", "userunknown"),
    ("quotaexceededexception", "mailboxfull"),
    ("storedrv.deliver; mailbox full", "mailboxfull"),
    ("recipient thread limit exceeded", "speeding"),
)


def _unique_code(text: str) -> str | None:
    """A cause from a code only one provider uses, or None. ``text`` is lower-case."""
    if "lpn" in text or "ofr" in text or "ouk" in text:
        match = FRANCE_PTT_RE.search(text)
        if match:
            return FRANCE_PTT_CODES.get(match.group(1) or match.group(2))
    if "aup#" in text:
        match = AUP_RE.search(text)
        if match:
            return _aup_code(match.group(1))
    if "/err/" in text:
        match = IUA_RE.search(text)
        if match:
            return IUA_CODES.get(match.group(1))
    if "resolver." in text or "storedrv." in text or "exception" in text or "thread" in text:
        for code, detail in EXCHANGE_CODES:
            if code in text:
                return detail
    return None


def _aup_code(token: str) -> str | None:
    detail = COX_CODES.get(token)
    if detail:
        return detail
    for prefix, detail in COX_PREFIXES:
        if token.startswith(prefix):
            return detail
    digits = re.search(r"(\d{4})$", token)
    if not digits:
        return None
    number = int(digits.group(1))
    for first, last, detail in SPECTRUM_RANGES:
        if first <= number <= last:
            return detail
    return None


# --- Providers recognised by host: their codes and fixed phrases -------------------------------


@dataclass(frozen=True)
class Provider:
    """A receiver's own wording. ``phrases`` are lower-case and tried in order."""

    name: str
    # Domain suffixes of its MX hosts and of its mailbox domains ("outlook.com" matches
    # "eur.olc.protection.outlook.com" and "outlook.com", not "myoutlook.com").
    hosts: tuple[str, ...]
    phrases: tuple[tuple[str, str], ...] = ()
    # Substrings that name the provider inside a reply (a host name in a greeting, a help URL).
    markers: tuple[str, ...] = ()
    # A provider-specific code pattern (group 1 is looked up in ``codes``, case-sensitive).
    code_re: re.Pattern[str] | None = None
    codes: tuple[tuple[str, str], ...] = ()


# GoDaddy (secureserver.net) adds "IBnnn" to its replies. After Sisimai::Rhost::GoDaddy
# (BSD-2-Clause) and godaddy.com's "what does my email bounceback mean" page.
GODADDY = Provider(
    name="godaddy",
    hosts=("secureserver.net",),
    markers=("secureserver.net", "x.co/rlbounce"),
    code_re=re.compile(r"(?<![\w-])(IB\d{3})(?![\w-])"),
    codes=(
        ("IB401", "securityerror"),  # authentication not allowed on inbound servers
        ("IB501", "notcompliantrfc"),  # blank From:
        ("IB502", "notcompliantrfc"),  # an IP address as From:
        ("IB506", "rejected"),  # From: domain invalid
        ("IB508", "authfailure"),  # SPF does not authorise the sender
        ("IB108", "requireptr"),  # reverse DNS failed
        ("IB212", "spamdetected"),  # content judged to be spam
        ("IB705", "virusdetected"),
        ("IB605", "toomanyconn"),  # too many recipients in one message
        ("IB007", "toomanyconn"),  # too many sessions from this IP
        ("IB101", "speeding"),  # higher than normal volume, try later
        ("IB110", "blocked"),  # temporarily blocked for spam content
        ("IB111", "blocked"),
        ("IB112", "blocked"),  # blocked for mailing too many invalid recipients
        ("IB113", "blocked"),
        ("IB504", "speeding"),  # too many messages this hour
        ("IB510", "speeding"),  # too many messages per session
        ("IB607", "speeding"),  # too many recipients this hour
        ("IB103", "badreputation"),  # poor reputation on Cloudmark CSI
        ("IB104", "blocked"),  # Spamhaus SBL
        ("IB105", "blocked"),  # Spamhaus XBL
        ("IB106", "blocked"),  # Spamhaus PBL
    ),
    phrases=(
        ("rbl reject", "blocked"),
        ("account storage limit", "mailboxfull"),
        ("message rejected for spam or virus content", "spamdetected"),
        ("account disabled", "suspend"),
        ("recipient not found", "userunknown"),
        ("account does not exist", "userunknown"),
    ),
)

# Cox's prose (its codes are handled with Spectrum's "AUP#" above). After Sisimai::Rhost::Cox.
COX = Provider(
    name="cox",
    hosts=("cox.net", "cox.com"),
    phrases=(
        ("too many bad commands from", "blocked"),
        ("too many invalid recipients", "blocked"),
        ("dns check failure - try again later", "requireptr"),
        ("rejected - no rdns", "requireptr"),
        ("esmtp no data before greeting", "policyviolation"),
        ("attachment extension is forbidden", "policyviolation"),
        ("esmtp server temporarily not available", "systemerror"),
        ("too many sessions from", "toomanyconn"),
        ("message threshold exceeded", "toomanyconn"),
        ("sender rejected", "rejected"),
        ("recipient rejected", "userunknown"),
    ),
)

# Tencent (QQ Mail, Foxmail, Tencent Exmail): short English phrases, one per help page of
# service.mail.qq.com. After Sisimai::Rhost::Tencent (BSD-2-Clause).
TENCENT = Provider(
    name="tencent",
    hosts=("qq.com", "foxmail.com", "tencent.com"),
    markers=("mail.qq.com",),
    phrases=(
        ("spf check failed", "authfailure"),
        ("dmarc check failed", "authfailure"),
        ("suspected bounce attacks", "blocked"),
        ("suspected spam ip", "blocked"),
        ("connection denied", "blocked"),
        ("message too large", "mesgtoobig"),
        ("mail is rejected by recipients", "rejected"),
        ("spam is embedded in the email", "spamdetected"),
        ("mail content denied", "spamdetected"),
        ("suspected spam", "rejected"),
        ("mailbox unavailable or access denied", "speeding"),
        ("is a deactivated mailbox", "suspend"),
        ("bad address syntax", "syntaxerror"),
        ("frequency limited", "toomanyconn"),  # IP, domain, sender or connection frequency
        ("mailbox not found", "userunknown"),
        ("\u7528\u6237\u4e0d\u5b58\u5728", "userunknown"),  # "user does not exist"
        ("\u90ae\u7bb1\u4e0d\u5b58\u5728", "userunknown"),  # "mailbox does not exist"
        ("\u90ae\u7bb1\u7a7a\u95f4\u4e0d\u8db3", "mailboxfull"),  # "mailbox space is short"
        ("\u53d1\u4fe1\u9891\u7387", "toomanyconn"),  # "sending frequency"
        ("\u5783\u573e\u90ae\u4ef6", "spamdetected"),  # "spam"
    ),
)

# Mimecast: fixed reason strings from its "SMTP error codes" article. After
# Sisimai::Rhost::Mimecast (BSD-2-Clause).
MIMECAST = Provider(
    name="mimecast",
    hosts=("mimecast.com", "mimecast-offshore.com"),
    markers=("mimecast",),
    phrases=(
        ("spf sender invalid - envelope rejected", "authfailure"),
        ("dkim sender invalid - envelope rejected", "authfailure"),
        ("dmarc sender invalid - envelope rejected", "authfailure"),
        ("local ct ip reputation", "badreputation"),
        ("internal resources are temporarily unavailable", "badreputation"),
        ("ip temporarily blacklisted", "blocked"),
        ("recipient temporarily unavailable", "blocked"),
        ("sender address blocked", "blocked"),
        ("maximum email size exceeded", "mesgtoobig"),
        ("mail loop detected", "networkerror"),
        ("open relay not allowed", "norelaying"),
        ("account inbounds disabled", "notaccept"),
        ("anti-spoofing policy", "policyviolation"),
        ("content examination policy", "policyviolation"),
        ("host network not allowed", "policyviolation"),
        ("administrative prohibition envelope blocked", "rejected"),
        ("envelope blocked", "rejected"),
        ("blocked senders", "rejected"),
        ("manually blocked senders", "rejected"),
        ("block policy for envelope from address", "rejected"),
        ("this route requires", "securityerror"),  # TLS, TLS 1.2, strong ciphers
        ("unable to process connection at this time", "systemerror"),
        ("message ended early", "systemerror"),
        ("account service is temporarily unavailable", "toomanyconn"),
        ("exceeding outbound thread limit", "toomanyconn"),
        ("invalid recipient", "userunknown"),
        ("email rejected due to security policies", "virusdetected"),
    ),
)

# Apple iCloud Mail. After Sisimai::Rhost::Apple (BSD-2-Clause) and Apple's postmaster page.
APPLE = Provider(
    name="apple",
    hosts=("icloud.com", "me.com", "mac.com", "apple.com"),
    markers=("icloud.com", ".me.com", "apple.com/"),
    phrases=(
        ("s dmarc policy", "authfailure"),
        ("failing both spf and dkim", "authfailure"),
        ("present in the spamhaus", "blocked"),
        ("due to listing in spamhaus", "blocked"),
        ("dnsbl-lookup", "blocked"),
        ("not accepting connections", "blocked"),
        ("recipient no longer on server", "hasmoved"),
        ("user is over quota", "mailboxfull"),
        ("relay access denied", "norelaying"),
        ("host/domain does not accept mail", "notaccept"),
        ("due to local policy", "policyviolation"),
        ("sender address rejected", "rejected"),
        ("due to excessive volume", "speeding"),
        ("inactive email address", "userunknown"),
        ("user does not exist", "userunknown"),
        ("unknown or illegal alias", "userunknown"),
    ),
)

# Yahoo and AOL (Yahoo Inc., *.yahoodns.net). Bracketed codes: [BLnn] block lists, [TSnn] /
# [TSSnn] deferral for volume or complaints, [PHnn] policy. After Sisimai::Rhost::YahooInc
# and ::Aol (BSD-2-Clause) and senders.yahooinc.com's error codes. Not Yahoo! JAPAN.
YAHOO = Provider(
    name="yahoo",
    hosts=("yahoodns.net", "yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com"),
    markers=("postmaster.yahoo", "yahooinc.com"),
    code_re=re.compile(r"\[(BL\d\d|TSS?\d\d|PH\d\d)\]"),
    codes=(("BL", "blocked"), ("TS", "rejected"), ("TSS", "rejected"), ("PH", "policyviolation")),
    phrases=(
        ("requires all senders to authenticate", "authfailure"),
        ("because the ip is in spamhaus", "blocked"),
        ("on spamhaus xbl", "blocked"),
        ("relaying denied for ", "norelaying"),
        ("headers are not rfc compliant", "notcompliantrfc"),
        ("not accepted for policy reasons", "policyviolation"),
        ("deferred due to unexpected volume or user complaints", "rejected"),
        ("unresolvable rfc.5321", "rejected"),
        (" will be permanently deferred", "rejected"),
        ("user is receiving mail too quickly", "speeding"),
        (" is no longer valid.", "suspend"),
        ("this mailbox is disabled", "suspend"),
        ("max message per connection reached", "toomanyconn"),
        ("this user doesn't have a ", "userunknown"),
        ("mailbox not found", "userunknown"),
        ("host or domain name not found", "hostunknown"),
        ("malformed or unexpected name server reply", "notaccept"),
    ),
)

# Google (Gmail, Workspace): long fixed sentences, each tied to one cause on
# support.google.com's "SMTP error reference". After Sisimai::Rhost::Google (BSD-2-Clause).
# Gmail ends its replies with "- gsmtp".
GOOGLE = Provider(
    name="google",
    hosts=("google.com", "gmail.com", "googlemail.com"),
    markers=(" gsmtp",),
    phrases=(
        ("the spf record of the sending domain", "authfailure"),
        ("senders to authenticate with", "authfailure"),
        ("senders to authenticate their email with", "authfailure"),
        ("due to domain's dmarc policy", "authfailure"),
        ("fails to pass spf checks", "authfailure"),
        ("has an spf record with a hard fail", "authfailure"),
        ("fails to pass authentication checks", "authfailure"),
        ("aligned with either the authenticated spf or dkim", "authfailure"),
        ("very low reputation of the sending", "badreputation"),
        ("ip not in whitelist for rcpt domain", "blocked"),
        ("unusual rate of unsolicited mail", "blocked"),
        ("an unusual rate of mail", "blocked"),
        ("helo/ehlo argument is invalid", "blocked"),
        ("exceeded google's message size limit", "mesgtoobig"),
        ("exceeds google's message size limit", "mesgtoobig"),
        ("exceeds google's limit of", "exceedlimit"),  # attachments
        ("header size limit", "exceedlimit"),
        ("bytes per individual header size", "exceedlimit"),
        ("inbox is out of storage space", "mailboxfull"),
        ("email quota exceeded", "mailboxfull"),
        ("account that you tried to reach is over quota", "mailboxfull"),
        ("message exceeded 50 hops", "networkerror"),
        ("mail relay denied", "norelaying"),
        ("invalid credentials for relay", "norelaying"),
        ("not authorized to send email directly to our servers", "norelaying"),
        ("missing a valid address in the from: header", "notcompliantrfc"),
        ("multiple addresses in from: header", "notcompliantrfc"),
        ("is not rfc 5322 compliant", "notcompliantrfc"),
        ("missing a valid message-id", "notcompliantrfc"),
        ("unicode character in a disallowed header", "notcompliantrfc"),
        ("encoded-word syntax is not permitted", "notcompliantrfc"),
        ("mail message is malformed", "notcompliantrfc"),
        ("illegal attachment on your message", "policyviolation"),
        ("content presents a potential security issue", "policyviolation"),
        ("has a policy that prohibited", "policyviolation"),
        ("messages with the same message-id", "policyviolation"),
        ("mail sending denied", "rejected"),
        ("unauthenticated email is not accepted", "rejected"),
        ("does not have a ptr record", "requireptr"),
        ("have a ptr record, or the ptr record", "requireptr"),
        ("does not match the ip address of the hostname", "requireptr"),
        ("ipv6 sending guidelines regarding ptr", "requireptr"),
        ("tls required for rcpt domain", "securityerror"),
        ("senders to use tls/ssl", "securityerror"),
        ("must issue a starttls command first", "securityerror"),
        ("nature of the content or the links within", "spamdetected"),
        ("likely unsolicited mail", "spamdetected"),
        ("is receiving mail too quickly", "speeding"),
        ("is receiving mail at a rate that", "speeding"),
        ("smtp relay limit exceeded", "speeding"),
        ("daily user sending limit exceeded", "speeding"),
        ("daily sending quota exceeded", "speeding"),
        ("this mail has been rate limited", "speeding"),
        ("account that you tried to reach is disabled", "suspend"),
        ("account that you tried to reach is inactive", "suspend"),
        ("temporary system problem", "systemerror"),
        ("mail server temporarily rejected message", "systemerror"),
        ("has temporarily rejected this message", "systemerror"),
        ("your message has too many recipients", "toomanyconn"),
        ("too many recipients for this sender", "toomanyconn"),
        ("the email account that you tried to reach does not exist", "userunknown"),
    ),
)

# Microsoft: Exchange Online (*.protection.outlook.com) and Outlook.com/Hotmail. Outlook.com
# tags its blocks "(S3150)", "(S3140)"; "(S775)" is a reputation rate limit. After
# Sisimai::Rhost::Microsoft and ::Outlook (BSD-2-Clause) and Microsoft's NDR pages.
MICROSOFT = Provider(
    name="microsoft",
    hosts=("outlook.com", "hotmail.com", "live.com", "msn.com", "office365.com"),
    markers=("outlook.com", "postmaster.live.com", "(s3150)", "(s3140)"),
    code_re=re.compile(r"\((S3150|S3140|S3114|S775)\)"),
    codes=(
        ("S3150", "blocked"),  # part of the sender's network is on the block list
        ("S3140", "blocked"),  # the sending IP is on the block list
        ("S3114", "blocked"),
        ("S775", "badreputation"),  # rate limited for IP reputation
    ),
    phrases=(
        # 5.4.1 from the directory edge: the recipient does not exist in the tenant.
        ("recipient address rejected: access denied", "userunknown"),
        ("requested action not taken: mailbox unavailable", "userunknown"),
        ("must pass either spf or dkim validation", "authfailure"),
        ("does not pass dmarc verification", "authfailure"),
        ("because of sender policy framework violation", "authfailure"),
        ("rate limited due to ip reputation", "badreputation"),
        ("part of their network is on our block list", "blocked"),
        ("banned sending ip", "blocked"),
        ("access denied, banned sender", "blocked"),
        ("using customer block list", "blocked"),
        ("access denied, bad helo", "blocked"),
        ("access denied, rejected by recipient", "blocked"),
        ("does not accept email over ipv6", "blocked"),
        ("access denied, please try again later", "blocked"),
        ("must have a reverse dns record", "requireptr"),
        ("access denied, spam abuse detected", "rejected"),
        ("access denied, bad outbound sender", "rejected"),
        ("delivery not authorized, message refused", "policyviolation"),
        ("delivery not authorized", "rejected"),
        ("sender was not authenticated", "rejected"),
        ("sender not authenticated for group", "rejected"),
        ("sender not in allowed-senders list", "rejected"),
        ("blocked from sending from unregistered domains", "rejected"),
        ("tenant has exceeded threshold", "speeding"),
        ("traffic not accepted from this ip", "speeding"),
        ("has exceeded permitted limits within", "speeding"),
        ("message receive limit", "speeding"),
        ("daily limit for message recipients", "speeding"),
        ("submission quota exceeded", "speeding"),
        ("content filter agent quarantined this message", "spamdetected"),
        ("server busy. please try again later from", "systemerror"),
        ("pfa agent busy", "systemerror"),
        ("(suspiciousremoteservererror)", "systemerror"),
        ("hop count exceeded", "networkerror"),
        ("routing loop detected", "networkerror"),
        ("domain is not reachable", "hostunknown"),
    ),
)

# Broadcom Email Security.cloud (MessageLabs). After Sisimai::Rhost::MessageLabs
# (BSD-2-Clause) and Broadcom's knowledge-base articles.
MESSAGELABS = Provider(
    name="messagelabs",
    hosts=("messagelabs.com", "symanteccloud.com"),
    markers=("messagelabs", "symanteccloud"),
    phrases=(
        ("domain authentication fail", "authfailure"),
        ("connection rejected by policy", "badreputation"),
        ("your ip is in the pbl", "blocked"),
        ("your ip address has been", "blocked"),
        ("stray linefeeds in message", "contenterror"),
        ("tls/sslv3 connection required", "securityerror"),
        ("please turn on smtp authentication", "securityerror"),
        (" as a relay, ", "norelaying"),
        ("this message is not rfc 5322", "notcompliantrfc"),
        ("sender envelope domain not allowed for sender ip address", "rejected"),
        ("your domain has been", "rejected"),  # blocked or blacklisted
        ("your email address has been", "rejected"),
        ("in my badmailfrom list", "rejected"),
        ("message filtered", "spamdetected"),
        ("filtered by outbound scanning", "spamdetected"),
        ("too many recipients received this hour", "toomanyconn"),
        ("too many messages", "toomanyconn"),
        ("no such user", "userunknown"),
        ("invalid recipient", "userunknown"),
        ("mailbox is not allowed", "userunknown"),
    ),
)

# Zoho Mail. After Sisimai::Rhost::Zoho (BSD-2-Clause).
ZOHO = Provider(
    name="zoho",
    hosts=("zoho.com", "zoho.eu", "zohomail.com", "zoho.in"),
    phrases=(
        ("email rejected per dmarc policy", "authfailure"),
        ("greylisted, try again after some time", "blocked"),
        ("email flagged as spam", "spamdetected"),
        ("mail rejected by destination domain", "rejected"),
        ("email policy violation detected", "policyviolation"),
        ("delivery restricted by policy", "policyviolation"),
        ("temporary system error", "systemerror"),
        ("user does not exist", "userunknown"),
        (" detected by zoho mail", "virusdetected"),
    ),
)

# Facebook's "XXX-Pn"/"XXX-Tn" response codes (facebook.com/postmaster/response_codes).
# After Sisimai::Rhost::Facebook (BSD-2-Clause).
FACEBOOK = Provider(
    name="facebook",
    hosts=("facebook.com", "facebookmail.com"),
    code_re=re.compile(r"(?<![\w-])((?:POL|RCP|MSG|DNS|CON|INT)-[PT]\d)(?![\w-])"),
    codes=(
        ("POL-P7", "authfailure"),
        ("POL-P1", "blocked"),
        ("POL-P2", "blocked"),
        ("POL-P3", "blocked"),
        ("POL-P4", "blocked"),
        ("POL-T1", "blocked"),
        ("POL-T2", "blocked"),
        ("POL-T3", "blocked"),
        ("POL-P5", "virusdetected"),
        ("POL-P6", "spamdetected"),
        ("MSG-P1", "mesgtoobig"),
        ("INT-P2", "mesgtoobig"),
        ("MSG-P2", "contenterror"),
        ("MSG-P3", "notcompliantrfc"),
        ("MSG-T1", "toomanyconn"),
        ("RCP-P1", "userunknown"),
        ("INT-P1", "userunknown"),
        ("INT-P3", "userunknown"),
        ("INT-P4", "userunknown"),
        ("RCP-P2", "filtered"),  # the recipient's preferences
        ("RCP-P3", "filtered"),  # the recipient's privacy settings
        ("RCP-T1", "systemerror"),
        ("RCP-T4", "suspend"),  # deactivated address
        ("DNS-P1", "rejected"),  # MAIL FROM domain does not exist
        ("DNS-P2", "rejected"),
        ("DNS-T1", "rejected"),
        ("DNS-P3", "requireptr"),
        ("DNS-T2", "requireptr"),
        ("CON-T1", "toomanyconn"),
        ("CON-T2", "toomanyconn"),
        ("CON-T3", "toomanyconn"),
        ("CON-T4", "toomanyconn"),
    ),
)

# Cloudflare Email Routing. After Sisimai::Rhost::Cloudflare (BSD-2-Clause).
CLOUDFLARE = Provider(
    name="cloudflare",
    hosts=("mx.cloudflare.net",),
    phrases=(
        ("found on one or more dnsbls", "blocked"),
        ("found on one or more rbls", "blocked"),
        ("upstream error", "systemerror"),
    ),
)

# NTT docomo (mfsmax.docomo.ne.jp) answers "550 Unknown user" both for a missing address and,
# after DATA, for a message its filters refuse (see ``_docomo``). After
# Sisimai::Rhost::NTTDOCOMO (BSD-2-Clause).
DOCOMO = Provider(
    name="docomo",
    hosts=("docomo.ne.jp",),
    phrases=(
        ("552 too much mail data", "mailboxfull"),
        ("552 too many recipients", "toomanyconn"),
    ),
)

PROVIDERS: tuple[Provider, ...] = (
    MICROSOFT,
    GOOGLE,
    YAHOO,
    APPLE,
    GODADDY,
    COX,
    TENCENT,
    MIMECAST,
    MESSAGELABS,
    ZOHO,
    FACEBOOK,
    CLOUDFLARE,
    DOCOMO,
)

_CODE_TABLES: dict[str, dict[str, str]] = {p.name: dict(p.codes) for p in PROVIDERS if p.codes}
_BY_SUFFIX: dict[str, Provider] = {s: p for p in PROVIDERS for s in p.hosts}
_MARKERS: tuple[tuple[str, Provider], ...] = tuple((m, p) for p in PROVIDERS for m in p.markers)


def _provider_of_host(host: str) -> Provider | None:
    """The provider whose domain ``host`` is or is under ("a.b.outlook.com" -> Microsoft)."""
    labels = host.split(".")
    for start in range(len(labels) - 1):  # never a bare top-level domain
        provider = _BY_SUFFIX.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    return None


def _providers_for(hosts: tuple[str, ...], text: str) -> list[Provider]:
    """The providers named by the hosts (most trusted first), then by markers in the text."""
    found: list[Provider] = []
    for host in hosts:
        provider = _provider_of_host(host)
        if provider is not None and provider not in found:
            found.append(provider)
    for marker, provider in _MARKERS:
        if marker in text and provider not in found:
            found.append(provider)
    return found


def _provider_code(provider: Provider, original: str) -> str | None:
    if provider.code_re is None:
        return None
    match = provider.code_re.search(original)
    if not match:
        return None
    table = _CODE_TABLES[provider.name]
    code = match.group(1)
    return table.get(code) or table.get(code.rstrip("0123456789"))


def _docomo(text: str, status: str | None, command: str | None) -> str | None:
    if status == "5.2.0":
        return "filtered"
    if "unknown user" in text:
        if command == "DATA":
            return "rejected"  # refused after DATA: its filter, not its directory
        if command == "RCPT" or status in ("5.1.1", "5.0.911"):
            return "userunknown"
    return None


HOST_SAID_RE = re.compile(r"host ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\.?\s*\[")
TALKING_TO_RE = re.compile(r"while talking to ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\.?:")


def remote_host_from_text(text: str | None) -> str | None:
    """The remote host a report's prose names ("host X[ip] said:", "while talking to X.:")."""
    if not text:
        return None
    text = text.lower()
    if "host " in text:
        match = HOST_SAID_RE.search(text)
        if match:
            return match.group(1)
    if "talking to" in text:
        match = TALKING_TO_RE.search(text)
        if match:
            return match.group(1)
    return None


def _clean_host(host: str | None) -> str | None:
    """The bare name of a Remote-MTA value such as "mx.example.com [192.0.2.1] (TCP|...)"."""
    if not host:
        return None
    host = host.strip().lower().split()[0] if host.strip() else ""
    host = host.strip("[]<>.;,()")
    return host or None


@lru_cache(maxsize=256)
def server_detail(
    diagnostic: str | None,
    remote_host: str | None = None,
    recipient_domain: str | None = None,
    status: str | None = None,
    command: str | None = None,
) -> str | None:
    """The cause a provider's own code or wording gives, or None when there is none.

    ``remote_host`` is the server that refused (Remote-MTA or the host named in the prose);
    ``recipient_domain`` the domain of the address we sent to. Only codes unique to one
    provider are read without either.
    """
    if not diagnostic:
        return None
    text = diagnostic.lower()
    detail = _unique_code(text)
    # A documented code is the provider's directory verdict wherever in the dialogue it came;
    # its prose is not (see the DATA rule below).
    coded = detail is not None
    if detail is None:
        hosts = tuple(
            h
            for h in (
                _clean_host(remote_host),
                remote_host_from_text(text),
                _clean_host(recipient_domain),
            )
            if h
        )
        for provider in _providers_for(hosts, text):
            if provider is DOCOMO:
                detail = _docomo(text, status, command)
            if detail is None:
                detail = _provider_code(provider, diagnostic)
                coded = detail is not None
            if detail is None:
                detail = next((d for phrase, d in provider.phrases if phrase in text), None)
            if detail is not None:
                break
    if detail in ("userunknown", "hostunknown") and command == "MAIL":
        return "rejected"  # refused at MAIL FROM: it is our sender that was refused
    if detail == "userunknown" and command == "DATA" and not coded:
        return "filtered"  # after DATA: how content filters answer, not a directory verdict
    return detail
