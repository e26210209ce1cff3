"""Sender Policy Framework evaluation (RFC 7208) for the mail troubleshooting pages.

Pure Python on top of dnspython, with no Django imports, so it can run in a request, a
Celery task or a test alike. Every DNS question goes through the ``dns.resolver.Resolver``
the caller passes in: the app builds it from settings, the tests point it at a loopback
server.

Besides the verdict, :class:`SpfResult` carries what DNS answered along the way, so a page
can show a firm *why* a message failed, not just *that* it failed.

One piece (over 500 lines) on purpose: record parsing, macro expansion, the DNS layer
and the evaluation share RFC 7208's DNS-lookup and void-lookup limits and
its error classes; split, each part would need the evaluation's state passed around.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

__all__ = [
    "DEFAULT_EXPLANATION",
    "RESULTS",
    "DnsAnswer",
    "SpfResult",
    "check_host",
    "check_mail_from",
    "count_spf_lookups",
    "mail_from_identity",
    "spf_record_merge",
]

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")

# RFC 7208 6.2 leaves the explanation of a fail without exp= to the receiver.
DEFAULT_EXPLANATION = "The domain's SPF policy does not authorise this server to send its mail."

MAX_MX_NAMES = 10  # RFC 7208 4.6.4: more MX names than this is a permerror
MAX_PTR_NAMES = 10  # RFC 7208 4.6.4: PTR names beyond this are ignored

_QUALIFIER_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_DNS_MECHANISMS = frozenset({"a", "mx", "ptr", "exists", "include"})
_KNOWN_MECHANISMS = _DNS_MECHANISMS | {"all", "ip4", "ip6"}

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DnsAnswer:
    """One DNS question asked during an evaluation and what came back.

    ``text`` holds the records in presentation format, one per line, or the reason there
    were none: ``NXDOMAIN``, ``no records``, ``timeout``, ``server failure``...
    """

    name: str
    rtype: str
    text: str


@dataclass(frozen=True)
class SpfResult:
    """The outcome of :func:`check_host`.

    ``explanation`` is only set for ``fail`` (RFC 7208 6.2): the domain's ``exp=`` text, or
    the default explanation. ``problem`` says why a ``permerror``/``temperror`` (or a
    ``none`` for a malformed domain) happened. ``lookups`` counts the terms that used up
    the DNS-lookup budget, ``void_lookups`` those that found nothing. ``answers`` lists the
    DNS questions in the order they were asked.
    """

    result: str
    domain: str
    explanation: str = ""
    record: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    answers: tuple[DnsAnswer, ...] = field(default_factory=tuple)
    matched: str | None = None
    problem: str = ""


class _PermError(Exception):
    """The published policy is broken: the result is permerror."""


class _TempError(Exception):
    """DNS could not answer: the result is temperror."""


# --------------------------------------------------------------------------- records ---

_VERSION_RE = re.compile(rb"v=spf1(?: |\Z)", re.IGNORECASE)
_MODIFIER_RE = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.DOTALL)
_MECHANISM_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*)(.*)", re.DOTALL)
# The domain part is lazy so a trailing CIDR is peeled off, yet a "/" inside a name
# ("a:foo/bar.example.com") still belongs to the name when no valid CIDR follows.
_DUAL_CIDR_ARG_RE = re.compile(
    r"(?::(?P<domain>.*?))?(?:/(?P<v4>0|[1-9][0-9]*))?(?://(?P<v6>0|[1-9][0-9]*))?", re.DOTALL
)
_IP4_ARG_RE = re.compile(r":(?P<addr>[0-9.]+)(?:/(?P<len>0|[1-9][0-9]*))?")
_IP6_ARG_RE = re.compile(r":(?P<addr>[0-9A-Fa-f:.]+)(?:/(?P<len>0|[1-9][0-9]*))?")
_MACRO_RE = re.compile(
    r"%(?:\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<reverse>[rR]?)(?P<delims>[.\-+,/_=]*)\}"
    r"|(?P<escape>[%_-]))"
)
_TOPLABEL_END_RE = re.compile(
    r"\.(?:[0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*|[0-9A-Za-z]+-[0-9A-Za-z-]*[0-9A-Za-z])\.?\Z"
)
_DOMAIN_MACROS = frozenset("slodiphv")
_EXPLAIN_ONLY_MACROS = frozenset("crt")


@dataclass(frozen=True)
class _Mechanism:
    text: str
    qualifier: str
    kind: str
    domain_spec: str | None = None
    cidr4: int | None = None
    cidr6: int | None = None
    network: _IPNetwork | None = None


@dataclass(frozen=True)
class _Record:
    text: str
    mechanisms: tuple[_Mechanism, ...]
    redirect: str | None
    exp: str | None


def _macro_tokens(text: str, *, explain: bool) -> list[str | re.Match[str]]:
    """Split a macro-string into literal runs and macro matches, checking RFC 7208 7.1."""
    tokens: list[str | re.Match[str]] = []
    literal: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char != "%":
            if not ("\x21" <= char <= "\x7e" or (explain and char == " ")):
                raise _PermError(f"character {char!r} is not allowed in {text!r}")
            literal.append(char)
            pos += 1
            continue
        match = _MACRO_RE.match(text, pos)
        if match is None:
            raise _PermError(f"invalid macro {text[pos : pos + 3]!r} in {text!r}")
        letter = (match["letter"] or "").lower()
        if letter and letter not in _DOMAIN_MACROS:
            if letter not in _EXPLAIN_ONLY_MACROS:
                raise _PermError(f"unknown macro letter {letter!r} in {text!r}")
            if not explain:
                raise _PermError(f"macro %{{{letter}}} is only allowed in exp= text")
        if match["digits"] and int(match["digits"]) == 0:
            raise _PermError(f"macro {match[0]!r} asks for zero labels")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(match)
        pos = match.end()
    if literal:
        tokens.append("".join(literal))
    return tokens


def _check_domain_spec(spec: str) -> None:
    """RFC 7208 7.1: a domain-spec ends in a macro or in "." toplabel [ "." ]."""
    if not spec:
        raise _PermError("empty domain-spec")
    last = _macro_tokens(spec, explain=False)[-1]
    if isinstance(last, str) and not _TOPLABEL_END_RE.search(last):
        raise _PermError(f"{spec!r} does not end in a valid top-level label")


def _cidr(value: str | None, maximum: int, term: str) -> int | None:
    if value is None:
        return None
    length = int(value)
    if length > maximum:
        raise _PermError(f"CIDR length /{length} is out of range in {term!r}")
    return length


def _parse_mechanism(term: str) -> _Mechanism:
    qualifier = "+"
    body = term
    if body[:1] in _QUALIFIER_RESULTS:
        qualifier, body = body[0], body[1:]
    match = _MECHANISM_RE.fullmatch(body)
    if match is None or match[1].lower() not in _KNOWN_MECHANISMS:
        raise _PermError(f"unknown mechanism {term!r}")
    kind, rest = match[1].lower(), match[2]

    if kind == "all":
        if rest:
            raise _PermError(f"'all' takes no argument: {term!r}")
        return _Mechanism(term, qualifier, kind)
    if kind in ("include", "exists"):
        if not rest.startswith(":"):
            raise _PermError(f"{kind} needs ':domain': {term!r}")
        _check_domain_spec(rest[1:])
        return _Mechanism(term, qualifier, kind, domain_spec=rest[1:])
    if kind == "ptr":
        if rest and not rest.startswith(":"):
            raise _PermError(f"malformed ptr mechanism {term!r}")
        spec = rest[1:] if rest else None
        if spec is not None:
            _check_domain_spec(spec)
        return _Mechanism(term, qualifier, kind, domain_spec=spec)
    if kind in ("a", "mx"):
        parts = _DUAL_CIDR_ARG_RE.fullmatch(rest)
        if parts is None:
            raise _PermError(f"malformed {kind} mechanism {term!r}")
        spec = parts["domain"]
        if spec is not None:
            _check_domain_spec(spec)
        return _Mechanism(
            term,
            qualifier,
            kind,
            domain_spec=spec,
            cidr4=_cidr(parts["v4"], 32, term),
            cidr6=_cidr(parts["v6"], 128, term),
        )
    pattern, maximum = (_IP4_ARG_RE, 32) if kind == "ip4" else (_IP6_ARG_RE, 128)
    parts = pattern.fullmatch(rest)
    if parts is None:
        raise _PermError(f"malformed {kind} mechanism {term!r}")
    try:
        address = ipaddress.ip_address(parts["addr"])
    except ValueError as exc:
        raise _PermError(f"bad address in {term!r}") from exc
    if address.version != (4 if kind == "ip4" else 6):
        raise _PermError(f"bad address in {term!r}")
    length = _cidr(parts["len"], maximum, term)
    network = ipaddress.ip_network((address, maximum if length is None else length), strict=False)
    return _Mechanism(term, qualifier, kind, network=network)


def _parse_record(text: str) -> _Record:
    """Parse a whole record up front: RFC 7208 4.6 wants syntax errors found anywhere."""
    mechanisms: list[_Mechanism] = []
    modifiers: dict[str, str] = {}
    # Terms are separated by spaces only; any other whitespace is part of a (bad) term.
    for term in text.split(" ")[1:]:
        if not term:
            continue
        modifier = _MODIFIER_RE.fullmatch(term)
        if modifier is None:
            mechanisms.append(_parse_mechanism(term))
            continue
        name, value = modifier[1].lower(), modifier[2]
        if name in ("redirect", "exp"):
            if name in modifiers:
                raise _PermError(f"{name}= appears more than once")
            _check_domain_spec(value)
            modifiers[name] = value
        else:
            # Unknown modifiers are ignored, but their value must still be a macro-string.
            _macro_tokens(value, explain=False)
    return _Record(text, tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"))


# ------------------------------------------------------------------------------- DNS ---


def _dns_name(domain: str) -> dns.name.Name:
    """Build a query name label by label, so odd characters are taken literally."""
    text = domain[:-1] if domain.endswith(".") else domain
    if not text:
        raise dns.name.EmptyLabel
    return dns.name.Name([*(label.encode("utf-8") for label in text.split(".")), b""])


def _name_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


class _Dns:
    """Resolver front end: caches within one evaluation and records what DNS said."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self.answers: list[DnsAnswer] = []
        self._cache: dict[tuple[dns.name.Name, str], list[Any] | _TempError] = {}

    def lookup(self, name: str | dns.name.Name, rtype: str) -> list[Any]:
        """Records of ``rtype`` at ``name``; [] for NXDOMAIN, no data or an impossible name.

        Raises _TempError when DNS times out or the server fails (RFC 7208 2.6.6).
        """
        if isinstance(name, str):
            try:
                qname = _dns_name(name)
            except (dns.exception.DNSException, UnicodeError):
                # RFC 7208 4.3/5: a name DNS cannot carry is treated as non-existent.
                self.answers.append(DnsAnswer(name, rtype, "not a valid DNS name"))
                return []
        else:
            qname = name
        key = (qname, rtype)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._ask(qname, rtype)
            self._cache[key] = cached
        if isinstance(cached, _TempError):
            raise cached
        return cached

    def _ask(self, qname: dns.name.Name, rtype: str) -> list[Any] | _TempError:
        shown = _name_text(qname)
        try:
            answer = self.resolver.resolve(qname, rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            self.answers.append(DnsAnswer(shown, rtype, "NXDOMAIN"))
            return []
        except dns.exception.Timeout:
            self.answers.append(DnsAnswer(shown, rtype, "timeout"))
            return _TempError(f"DNS timeout looking up {rtype} {shown}")
        except dns.resolver.NoNameservers:
            self.answers.append(DnsAnswer(shown, rtype, "server failure"))
            return _TempError(f"DNS server failure looking up {rtype} {shown}")
        except dns.exception.DNSException as exc:
            self.answers.append(DnsAnswer(shown, rtype, f"DNS error: {exc}"))
            return _TempError(f"DNS error looking up {rtype} {shown}: {exc}")
        records = list(answer.rrset) if answer.rrset is not None else []
        text = "\n".join(record.to_text() for record in records) or "no records"
        if answer.canonical_name != qname:
            text = f"(via CNAME {_name_text(answer.canonical_name)})\n{text}"
        self.answers.append(DnsAnswer(shown, rtype, text))
        return records

    def spf_record(self, domain: str) -> tuple[str | None, bool]:
        """The one v=spf1 TXT record at ``domain`` (RFC 7208 4.5), and whether DNS was void."""
        records = self.lookup(domain, "TXT")
        candidates = [
            text
            for text in (b"".join(record.strings) for record in records)
            if _VERSION_RE.match(text)
        ]
        if not candidates:
            return None, not records
        if len(candidates) > 1:
            raise _PermError(f"{domain} publishes {len(candidates)} SPF records")
        try:
            return candidates[0].decode("ascii"), False
        except UnicodeDecodeError as exc:
            raise _PermError(f"the SPF record of {domain} contains non-ASCII characters") from exc


# ------------------------------------------------------------------------ evaluation ---


@dataclass(frozen=True)
class _Outcome:
    result: str
    domain: str
    record: _Record | None = None
    matched: str | None = None


class _Evaluation:
    def __init__(
        self,
        *,
        ip: _IPAddress,
        sender: str,
        helo: str,
        resolver: dns.resolver.Resolver,
        max_lookups: int,
        max_void_lookups: int,
        receiver: str,
    ) -> None:
        self.ip = ip
        self.local, _, self.sender_domain = sender.rpartition("@")
        self.sender = sender
        self.helo = helo
        self.receiver = receiver
        self.max_lookups = max_lookups
        self.max_void_lookups = max_void_lookups
        self.addr_type = "A" if ip.version == 4 else "AAAA"
        self.dns = _Dns(resolver)
        self.lookups = 0
        self.void_lookups = 0
        self.record: str | None = None
        self._ptr_names: list[dns.name.Name] | None = None
        self._validated: list[dns.name.Name] | None = None

    # -- limits (RFC 7208 4.6.4)

    def _count_lookup(self) -> None:
        self.lookups += 1
        if self.lookups > self.max_lookups:
            raise _PermError(f"more than {self.max_lookups} DNS-querying terms")

    def _count_void(self) -> None:
        self.void_lookups += 1
        if self.void_lookups > self.max_void_lookups:
            raise _PermError(f"more than {self.max_void_lookups} lookups found nothing")

    # -- check_host() proper (RFC 7208 4)

    def check(self, domain: str, *, nested: bool) -> _Outcome:
        text, void = self.dns.spf_record(domain)
        if not nested:
            self.record = text
        elif void:
            self._count_void()
        if text is None:
            return _Outcome("none", domain)
        record = _parse_record(text)
        for mechanism in record.mechanisms:
            if self._matches(mechanism, domain):
                result = _QUALIFIER_RESULTS[mechanism.qualifier]
                return _Outcome(result, domain, record, mechanism.text)
        if record.redirect is not None:
            self._count_lookup()
            target = self._target(record.redirect, domain)
            outcome = self.check(target, nested=True)
            if outcome.result == "none":
                raise _PermError(f"redirect={target} has no SPF record")
            return outcome
        return _Outcome("neutral", domain, record)

    def _matches(self, mechanism: _Mechanism, domain: str) -> bool:
        kind = mechanism.kind
        if kind == "all":
            return True
        if kind in ("ip4", "ip6"):
            # IPv4-mapped clients were turned into IPv4 up front, so versions compare.
            assert mechanism.network is not None
            return self.ip.version == mechanism.network.version and self.ip in mechanism.network
        self._count_lookup()
        target = self._target(mechanism.domain_spec, domain)
        if kind == "include":
            outcome = self.check(target, nested=True)
            if outcome.result == "none":
                raise _PermError(f"include:{target} has no SPF record")
            return outcome.result == "pass"
        if kind == "exists":
            # exists always asks for A, whatever the client's address family (RFC 7208 5.7).
            found = self.dns.lookup(target, "A")
            if not found:
                self._count_void()
            return bool(found)
        if kind == "a":
            addresses = self.dns.lookup(target, self.addr_type)
            if not addresses:
                self._count_void()
            return self._in_networks(addresses, mechanism)
        if kind == "mx":
            return self._mx_matches(target, mechanism)
        return self._ptr_matches(target)

    def _in_networks(self, records: list[Any], mechanism: _Mechanism) -> bool:
        if self.ip.version == 4:
            length = 32 if mechanism.cidr4 is None else mechanism.cidr4
        else:
            length = 128 if mechanism.cidr6 is None else mechanism.cidr6
        for record in records:
            network = ipaddress.ip_network((record.address, length), strict=False)
            if self.ip in network:
                return True
        return False

    def _mx_matches(self, target: str, mechanism: _Mechanism) -> bool:
        exchanges = self.dns.lookup(target, "MX")
        if not exchanges:
            self._count_void()
            return False
        if len(exchanges) > MAX_MX_NAMES:
            raise _PermError(f"{target} has more than {MAX_MX_NAMES} MX records")
        for mx in sorted(exchanges, key=lambda record: record.preference):
            # A null MX (RFC 7505) names the root: it has no addresses to compare.
            if mx.exchange == dns.name.root:
                continue
            if self._in_networks(self.dns.lookup(mx.exchange, self.addr_type), mechanism):
                return True
        return False

    def _ptr_matches(self, target: str) -> bool:
        if not self._ptr_records():
            self._count_void()
            return False
        try:
            target_name = _dns_name(target)
        except dns.exception.DNSException:
            return False
        return any(name.is_subdomain(target_name) for name in self._validated_names())

    def _ptr_records(self) -> list[dns.name.Name]:
        if self._ptr_names is None:
            try:
                records = self.dns.lookup(dns.reversename.from_address(str(self.ip)), "PTR")
            except _TempError:
                # RFC 7208 5.5: a DNS error on the PTR lookup means "no match", not temperror;
                # spammers control their own reverse zones.
                records = []
            self._ptr_names = [record.target for record in records]
        return self._ptr_names

    def _validated_names(self) -> list[dns.name.Name]:
        """Client names whose forward lookup leads back to the client (RFC 7208 5.5)."""
        if self._validated is None:
            self._validated = []
            for name in self._ptr_records()[:MAX_PTR_NAMES]:
                try:
                    records = self.dns.lookup(name, self.addr_type)
                except _TempError:
                    continue  # RFC 7208 5.5: skip names whose lookup fails
                if any(ipaddress.ip_address(record.address) == self.ip for record in records):
                    self._validated.append(name)
        return self._validated

    # -- macros (RFC 7208 7)

    def _target(self, spec: str | None, domain: str) -> str:
        if spec is None:
            return domain
        name = self.expand(spec, domain, explain=False)
        if name.endswith("."):
            name = name[:-1]
        # RFC 7208 7.3: over-long names lose labels on the left until they fit.
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]
        return name

    def expand(self, text: str, domain: str, *, explain: bool) -> str:
        out: list[str] = []
        for token in _macro_tokens(text, explain=explain):
            if isinstance(token, str):
                out.append(token)
                continue
            escape = token["escape"]
            if escape:
                out.append({"%": "%", "_": " ", "-": "%20"}[escape])
                continue
            letter = token["letter"]
            parts = re.split(f"[{re.escape(token['delims'] or '.')}]", self._macro(letter, domain))
            if token["reverse"]:
                parts.reverse()
            if token["digits"]:
                parts = parts[-int(token["digits"]) :]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe="")
            out.append(value)
        return "".join(out)

    def _macro(self, letter: str, domain: str) -> str:
        letter = letter.lower()
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.local
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.ip.version == 4:
                return str(self.ip)
            # Upper-case nibbles, as the openspf reference suite expects in exp= text;
            # DNS compares names case-insensitively, so queries are unaffected.
            return ".".join(self.ip.packed.hex().upper())
        if letter == "p":
            return self._p_macro(domain)
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return self.receiver
        return str(int(time.time()))  # "t"; the tokenizer admits no other letter

    def _p_macro(self, domain: str) -> str:
        names = self._validated_names()
        if not names:
            return "unknown"
        try:
            wanted = _dns_name(domain)
        except dns.exception.DNSException:
            return _name_text(names[0])
        # RFC 7208 7.3: prefer the domain itself, then one of its subdomains.
        for name in names:
            if name == wanted:
                return _name_text(name)
        for name in names:
            if name.is_subdomain(wanted):
                return _name_text(name)
        return _name_text(names[0])

    def explain(self, outcome: _Outcome) -> str | None:
        """The exp= text for a fail, or None when there is none to use (RFC 7208 6.2)."""
        if outcome.record is None or outcome.record.exp is None:
            return None
        try:
            # exp= lookups come after the verdict and count against no limit.
            records = self.dns.lookup(self._target(outcome.record.exp, outcome.domain), "TXT")
            if len(records) != 1:
                return None
            text = b"".join(records[0].strings).decode("ascii")
            return self.expand(text, outcome.domain, explain=True)
        except (_PermError, _TempError, UnicodeDecodeError):
            return None


def _client_address(ip: str | _IPAddress) -> _IPAddress:
    address = ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip)
    # RFC 7208 5: an IPv4-mapped IPv6 client is an IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_checkable(domain: str) -> bool:
    """RFC 7208 4.3: a malformed or single-label domain gives "none" without any DNS."""
    text = domain[:-1] if domain.endswith(".") else domain
    if not text or text.startswith("[") or len(text) > 253:
        return False
    labels = text.split(".")
    return len(labels) >= 2 and all(0 < len(label) <= 63 for label in labels)


def check_host(
    ip: str,
    domain: str,
    sender: str,
    helo: str | None = None,
    *,
    resolver: dns.resolver.Resolver,
    max_lookups: int = 10,
    max_void_lookups: int = 2,
    default_explanation: str = DEFAULT_EXPLANATION,
    receiver: str = "unknown",
) -> SpfResult:
    """Evaluate the SPF policy of ``domain`` for a client at ``ip`` (RFC 7208 4).

    ``sender`` is the MAIL FROM address (or ``postmaster@<helo>`` when checking HELO);
    ``helo`` feeds the ``%{h}`` macro ("unknown" when not given) and ``receiver`` the
    ``%{r}`` macro. Raises ValueError when ``ip`` is not an IP address.
    """
    address = _client_address(ip)
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        sender_domain = sender or domain
    # RFC 7208 4.3: a sender without a local-part is treated as postmaster.
    sender = f"{local or 'postmaster'}@{sender_domain}"
    evaluation = _Evaluation(
        ip=address,
        sender=sender,
        helo=helo or "unknown",
        resolver=resolver,
        max_lookups=max_lookups,
        max_void_lookups=max_void_lookups,
        receiver=receiver,
    )

    def finish(result: str, **details: Any) -> SpfResult:
        return SpfResult(
            result=result,
            domain=domain,
            record=evaluation.record,
            lookups=evaluation.lookups,
            void_lookups=evaluation.void_lookups,
            answers=tuple(evaluation.dns.answers),
            **details,
        )

    if not _is_checkable(domain):
        return finish("none", problem=f"{domain!r} is not a domain name SPF can check")
    try:
        outcome = evaluation.check(domain, nested=False)
    except _PermError as exc:
        return finish("permerror", problem=str(exc))
    except _TempError as exc:
        return finish("temperror", problem=str(exc))
    explanation = ""
    if outcome.result == "fail":
        explanation = evaluation.explain(outcome) or default_explanation
    problem = f"{domain} publishes no SPF record" if outcome.result == "none" else ""
    return finish(outcome.result, explanation=explanation, matched=outcome.matched, problem=problem)


def mail_from_identity(mail_from: str, helo: str) -> tuple[str, str]:
    """The (sender, domain) pair check_host() takes for a MAIL FROM (RFC 7208 2.4).

    An empty reverse path ("bounce") is checked as ``postmaster@<helo>``.
    """
    mail_from = mail_from.strip().removeprefix("<").removesuffix(">")
    if not mail_from:
        return f"postmaster@{helo}", helo
    return mail_from, mail_from.rpartition("@")[2]


def check_mail_from(
    ip: str,
    mail_from: str,
    helo: str,
    *,
    resolver: dns.resolver.Resolver,
    **options: Any,
) -> SpfResult:
    """check_host() for an SMTP transaction: the MAIL FROM identity, or HELO for bounces."""
    sender, domain = mail_from_identity(mail_from, helo)
    return check_host(ip, domain, sender, helo, resolver=resolver, **options)


# --------------------------------------------------------------------- record tools ---


def count_spf_lookups(domain: str, resolver: dns.resolver.Resolver, *, stop_after: int = 50) -> int:
    """How many DNS-querying terms the SPF policy of ``domain`` costs in the worst case.

    Follows include: and redirect= (a redirect only when the record has no ``all``) and
    counts every a, mx, ptr, exists, include and redirect, as RFC 7208 4.6.4 does against
    its limit of 10. Targets built from macros are counted but cannot be followed without a
    real message; includes that fail to resolve count once. Include loops stop the walk as
    soon as the count passes ``stop_after``, so a loop shows up as a number far above 10.
    """
    client = _Dns(resolver)
    count = 0

    def walk(name: str) -> None:
        nonlocal count
        try:
            text, _ = client.spf_record(name)
        except (_PermError, _TempError):
            return
        if text is None:
            return
        redirect: str | None = None
        has_all = False
        for term in text.split()[1:]:
            modifier = _MODIFIER_RE.fullmatch(term)
            if modifier is not None:
                if modifier[1].lower() == "redirect":
                    redirect = modifier[2]
                continue
            body = term[1:] if term[:1] in _QUALIFIER_RESULTS else term
            kind, _, argument = body.partition(":")
            kind = kind.split("/", 1)[0].lower()
            has_all = has_all or kind == "all"
            if kind not in _DNS_MECHANISMS:
                continue
            count += 1
            if count > stop_after:
                return
            if kind == "include" and argument and "%" not in argument:
                walk(argument)
        if redirect and not has_all:
            count += 1
            if count <= stop_after and "%" not in redirect:
                walk(redirect)

    walk(domain)
    return count


def spf_record_merge(existing: str | None, include: str) -> str:
    """The single SPF record to publish once ``include`` is authorised as well.

    Adds ``include:<include>`` just before the record's ``all`` term (whose qualifier is
    kept) or before its ``redirect=``, else at the end; returns the record unchanged when
    the include is already there, and ``v=spf1 include:<include> ~all`` when there is no
    record yet. Raises ValueError when ``existing`` is not an SPF record or ``include`` is
    not a bare domain. Publishing needs one TXT record; only strings over 255 characters are
    split, into several character-strings of that same record.
    """
    target = include.strip()
    if target.lower().startswith("include:"):
        target = target[len("include:") :]
    if not target or any(char.isspace() for char in target) or "=" in target:
        raise ValueError(f"not a domain to include: {include!r}")
    new_term = f"include:{target}"
    if existing is None or not existing.strip():
        return f"v=spf1 {new_term} ~all"

    terms = existing.split()
    if terms[0].lower() != "v=spf1":
        raise ValueError(f"not an SPF record: {existing!r}")
    body = terms[1:]
    wanted = new_term.lower()
    if any(term.lower().removeprefix("+") == wanted for term in body):
        return " ".join(["v=spf1", *body])
    position = len(body)
    for index, term in enumerate(body):
        bare = term[1:] if term[:1] in _QUALIFIER_RESULTS else term
        if bare.lower() == "all" or term.lower().startswith("redirect="):
            position = index
            break
    body.insert(position, new_term)
    return " ".join(["v=spf1", *body])
