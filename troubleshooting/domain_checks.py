"""Checks of a firm's sending domain: SPF, DKIM, DMARC and MX, with the record to publish.

Pure functions over a dnspython resolver: the app passes one built from settings
(portal.dns.make_resolver), tests pass one aimed at a DNS server on loopback. Each failed
check names a problem code from the catalogue and, where DNS can fix it, the exact record
to publish, merged with what is already there.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field
from functools import cache

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from publicsuffixlist import PublicSuffixList

from troubleshooting.dnsrecords import DkimKey, DmarcPolicy, parse_dkim, parse_dmarc
from troubleshooting.spf import check_host, count_spf_lookups, spf_record_merge

MAX_SPF_LOOKUPS = 10
# RFC 8301: verifiers must not accept RSA keys under 1024 bits (Gmail ignores them).
MIN_RSA_BITS = 1024
ED25519_KEY_BYTES = 32  # RFC 8463: the raw public key, not wrapped in DER


@dataclass(frozen=True)
class SendingService:
    """How the portal sends: what a firm's domain must authorise."""

    spf_include: str = ""  # e.g. "_spf.portal.example"
    sending_ips: tuple[str, ...] = ()
    dkim: tuple[tuple[str, str], ...] = ()  # (selector, CNAME target)
    # The domain of the envelope sender (Return-Path) SPF is checked against: the platform's
    # bounce domain (VERP) or the ESP's own ("" when not known: never the firm's), or None
    # when the envelope sender is the From address itself (plain SMTP without VERP).
    return_path_domain: str | None = ""


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str


@dataclass
class CheckResult:
    name: str  # spf, dkim:<selector>, dmarc, mx
    ok: bool
    problem_code: str = ""
    summary: str = ""
    answers: list[tuple[str, str, str]] = field(default_factory=list)
    publish: Record | None = None
    # Machine-readable findings the pages put into words (key type and size, alignment).
    facts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _txt(resolver: dns.resolver.Resolver, name: str, answers: list) -> list[str] | None:
    """TXT strings at `name`; [] for none, None when DNS did not answer (temporary)."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        answers.append((name, "TXT", "(none)"))
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers):
        answers.append((name, "TXT", "(no answer: DNS timed out or failed)"))
        return None
    texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    answers.extend((name, "TXT", t) for t in texts)
    return texts


def check_spf(domain: str, service: SendingService, resolver) -> CheckResult:
    answers: list = []
    texts = _txt(resolver, domain, answers)
    if texts is None:
        return CheckResult("spf", False, "", "DNS did not answer; try again later.", answers)
    records = [t for t in texts if t.lower().startswith("v=spf1")]
    fresh = f"v=spf1 include:{service.spf_include} ~all" if service.spf_include else None
    if not records:
        publish = Record(domain, "TXT", fresh or "v=spf1 mx ~all")
        return CheckResult("spf", False, "domain.spf_missing", "No SPF record.", answers, publish)
    merged = (
        spf_record_merge(records[0], service.spf_include) if service.spf_include else records[0]
    )
    if len(records) > 1:
        return CheckResult(
            "spf",
            False,
            "domain.spf_invalid",
            f"{len(records)} SPF records; receivers treat that as an error.",
            answers,
            Record(domain, "TXT", merged),
        )
    lookups = count_spf_lookups(domain, resolver)
    if lookups > MAX_SPF_LOOKUPS:
        return CheckResult(
            "spf",
            False,
            "domain.spf_too_many_lookups",
            f"The record needs {lookups} DNS lookups; at most {MAX_SPF_LOOKUPS} are allowed.",
            answers,
        )
    for ip in service.sending_ips or ():
        result = check_host(ip, domain, f"postmaster@{domain}", resolver=resolver)
        answers.extend((a.name, a.rtype, a.text) for a in result.answers)
        if result.result in ("permerror",):
            return CheckResult(
                "spf",
                False,
                "domain.spf_invalid",
                f"The SPF record has an error: {result.problem}",
                answers,
                Record(domain, "TXT", merged),
            )
        if result.result != "pass":
            return CheckResult(
                "spf",
                False,
                "domain.spf_invalid",
                f"The record does not authorise the portal's sending address {ip} "
                f"(result: {result.result}).",
                answers,
                Record(domain, "TXT", merged),
            )
    included = f"include:{service.spf_include}".lower() in records[0].lower()
    if service.spf_include and not included and not service.sending_ips:
        return CheckResult(
            "spf",
            False,
            "domain.spf_invalid",
            "The record does not include the portal's sending service.",
            answers,
            Record(domain, "TXT", merged),
        )
    return CheckResult("spf", True, "", "SPF authorises the portal.", answers)


def dkim_key_facts(key: DkimKey) -> dict:
    """What a parsed DKIM key record holds: ``state`` ok, revoked, unreadable, too_short or
    unknown_type; ``type`` rsa or ed25519; ``bits`` for RSA."""
    if key["revoked"]:
        return {"state": "revoked", "type": key["k"]}
    try:
        raw = base64.b64decode(key["p"], validate=True)
    except (binascii.Error, ValueError):
        return {"state": "unreadable", "type": key["k"]}
    if key["k"] == "ed25519":
        ok = len(raw) == ED25519_KEY_BYTES
        return {"state": "ok" if ok else "unreadable", "type": "ed25519", "bits": 256}
    if key["k"] != "rsa":
        return {"state": "unknown_type", "type": key["k"]}
    try:
        public = load_der_public_key(raw)
    except ValueError:
        # Some publish the bare PKCS#1 RSAPublicKey instead of SubjectPublicKeyInfo.
        pem = b"-----BEGIN RSA PUBLIC KEY-----\n%s\n-----END RSA PUBLIC KEY-----\n" % (
            base64.encodebytes(raw)
        )
        try:
            public = load_pem_public_key(pem)
        except ValueError:
            return {"state": "unreadable", "type": "rsa"}
    if not isinstance(public, rsa.RSAPublicKey):
        return {"state": "unreadable", "type": "rsa"}
    bits = public.key_size
    return {"state": "ok" if bits >= MIN_RSA_BITS else "too_short", "type": "rsa", "bits": bits}


def _describe_key(facts: dict) -> str:
    if facts.get("state") == "ok":
        if facts["type"] == "ed25519":
            return "DKIM key published: Ed25519."
        return f"DKIM key published: RSA, {facts['bits']} bits."
    return {
        "revoked": "The DKIM key has been revoked (its p= is empty).",
        "unreadable": "The DKIM key cannot be read.",
        "too_short": f"The RSA key has {facts.get('bits')} bits; receivers need at least "
        f"{MIN_RSA_BITS}.",
        "unknown_type": f"Unknown DKIM key type k={facts.get('type')}.",
        "missing": "No DKIM key at this selector.",
    }.get(facts.get("state", ""), "No usable DKIM key at this selector.")


def _dkim_key(name: str, resolver, answers: list) -> dict | None:
    """Fetch and judge the key at ``name`` (CNAMEs followed); None when DNS did not answer."""
    texts = _txt(resolver, name, answers)
    if texts is None:
        return None
    found: list[dict] = []
    for text in texts:
        try:
            key = parse_dkim(text)
        except ValueError as exc:
            found.append({"state": "unreadable", "type": "", "error": str(exc)})
            continue
        found.append(dkim_key_facts(key))
    if not found:
        return {"state": "missing"}
    # Several records at one selector: the best one decides (receivers try each).
    order = ["ok", "too_short", "revoked", "unknown_type", "unreadable"]
    return min(found, key=lambda f: order.index(f["state"]))


def check_dkim(domain: str, service: SendingService, resolver) -> list[CheckResult]:
    """Each selector's key, fetched through its CNAME: it must parse, hold a key (an empty
    ``p=`` is a revoked key) and be strong enough (RSA of 1024 bits or more, or Ed25519)."""
    results = []
    for selector, target in service.dkim:
        name = f"{selector}._domainkey.{domain}"
        check = f"dkim:{selector}"
        answers: list = []
        cname = None
        try:
            cname = resolver.resolve(name, "CNAME")[0].target.to_text().rstrip(".")
            answers.append((name, "CNAME", cname))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            results.append(
                CheckResult(
                    check, False, "", "DNS did not answer.", [(name, "CNAME", "(no answer)")]
                )
            )
            continue
        publish = Record(name, "CNAME", target)
        if cname is not None and cname.lower() != target.lower().rstrip("."):
            results.append(
                CheckResult(
                    check,
                    False,
                    "domain.dkim_missing",
                    f"The CNAME points to {cname}, not {target}.",
                    answers,
                    publish,
                    facts={"state": "wrong_cname"},
                )
            )
            continue
        facts = _dkim_key(name, resolver, answers)
        if facts is None:
            results.append(CheckResult(check, False, "", "DNS did not answer.", answers))
            continue
        ok = facts["state"] == "ok"
        summary = _describe_key(facts)
        if not ok and cname is not None:
            # The firm's CNAME is right; the key behind it is the portal's to fix.
            summary += f" The CNAME is right; the key at {cname} is the portal's."
        results.append(
            CheckResult(
                check,
                ok,
                "" if ok else "domain.dkim_missing",
                summary,
                answers,
                None if ok or cname is not None else publish,
                facts={**facts, "selector": selector, "signing_domain": domain},
            )
        )
    return results


@cache
def _public_suffixes() -> PublicSuffixList:
    # The snapshot of the Public Suffix List bundled with the package: nothing is fetched.
    return PublicSuffixList()


def organisational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (``mail.firm.co.uk`` -> ``firm.co.uk``)."""
    domain = domain.lower().rstrip(".")
    return _public_suffixes().privatesuffix(domain) or domain


def domains_align(one: str, other: str, mode: str) -> bool:
    """RFC 7489 3.1: strict (``s``) wants the same name; relaxed (``r``) the same
    organisational domain."""
    one, other = one.lower().rstrip("."), other.lower().rstrip(".")
    if mode == "s":
        return one == other
    return organisational_domain(one) == organisational_domain(other)


@dataclass
class DmarcLookup:
    name: str  # where the record was found, or first looked for
    answers: list
    answered: bool = True  # False: DNS did not answer
    record: str = ""
    policy: DmarcPolicy | None = None
    error: str = ""
    inherited: bool = False  # found at the organisational domain (its sp= applies)

    @property
    def applied(self) -> str:
        if self.policy is None:
            return ""
        return self.policy["sp"] if self.inherited else self.policy["p"]


def _dmarc_records(texts: list[str]) -> list[str]:
    return [t for t in texts if t.lower().replace(" ", "").startswith("v=dmarc1")]


def find_dmarc(domain: str, resolver) -> DmarcLookup:
    """The DMARC record that governs ``domain``: its own, else its organisational domain's
    (RFC 7489 6.6.3)."""
    name = f"_dmarc.{domain}"
    lookup = DmarcLookup(name, [])
    texts = _txt(resolver, name, lookup.answers)
    if texts is None:
        lookup.answered = False
        return lookup
    records = _dmarc_records(texts)
    organisational = organisational_domain(domain)
    if not records and organisational != domain.lower().rstrip("."):
        org_name = f"_dmarc.{organisational}"
        org_texts = _txt(resolver, org_name, lookup.answers)
        if org_texts is None:
            lookup.answered = False
            return lookup
        records = _dmarc_records(org_texts)
        if records:
            lookup.name, lookup.inherited = org_name, True
    if not records:
        return lookup
    lookup.record = records[0]
    try:
        lookup.policy = parse_dmarc(records[0])
    except ValueError as exc:
        lookup.error = str(exc)
    return lookup


def check_dmarc(
    domain: str, aligned: bool, resolver, *, lookup: DmarcLookup | None = None
) -> CheckResult:
    lookup = lookup or find_dmarc(domain, resolver)
    answers = lookup.answers
    starting = Record(
        f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"
    )
    if not lookup.answered:
        return CheckResult("dmarc", False, "", "DNS did not answer; try again later.", answers)
    if not lookup.record:
        return CheckResult(
            "dmarc", False, "domain.dmarc_missing", "No DMARC record.", answers, starting
        )
    if lookup.policy is None:
        return CheckResult(
            "dmarc",
            False,
            "domain.dmarc_missing",
            f"The DMARC record cannot be used: {lookup.error}",
            answers,
            starting,
        )
    policy, applied = lookup.policy, lookup.applied
    facts = {
        "p": applied,
        "adkim": policy["adkim"],
        "aspf": policy["aspf"],
        "found_at": lookup.name,
        "inherited": lookup.inherited,
    }
    if applied in ("quarantine", "reject") and not aligned:
        tag = "sp" if lookup.inherited and "sp=" in lookup.record else "p"
        return CheckResult(
            "dmarc",
            False,
            "domain.dmarc_misaligned",
            f"Policy {tag}={applied} would reject the portal's mail until SPF or DKIM align.",
            answers,
            Record(lookup.name, "TXT", lookup.record.replace(f"{tag}={applied}", f"{tag}=none")),
            facts=facts,
        )
    return CheckResult("dmarc", True, "", f"DMARC policy p={applied}.", answers, facts=facts)


def check_alignment(
    domain: str,
    service: SendingService,
    spf: CheckResult,
    dkim: list[CheckResult],
    policy: DmarcPolicy | None,
) -> CheckResult:
    """Which mechanism makes the portal's mail From ``domain`` pass DMARC (RFC 7489 3.1).

    DKIM aligns when a valid key signs for a domain aligned with From (the portal signs with
    d= the firm's domain, through the selectors it publishes). SPF aligns only when the
    Return-Path is on the firm's domain as well as authorised: the portal's bounce address
    or an ESP's Return-Path is not, however well the firm's SPF record reads.
    """
    adkim = policy["adkim"] if policy else "r"
    aspf = policy["aspf"] if policy else "r"
    dkim_aligned = any(
        d.ok and domains_align(d.facts.get("signing_domain", domain), domain, adkim) for d in dkim
    )
    return_path = domain if service.return_path_domain is None else service.return_path_domain
    spf_aligned = spf.ok and bool(return_path) and domains_align(return_path, domain, aspf)
    facts = {
        "dkim": dkim_aligned,
        "spf": spf_aligned,
        "spf_passes": spf.ok,
        "adkim": adkim,
        "aspf": aspf,
        "organisational_domain": organisational_domain(domain),
        "return_path_domain": return_path or "",
    }
    ok = dkim_aligned or spf_aligned
    if dkim_aligned and spf_aligned:
        summary = "Both DKIM and SPF align with your domain."
    elif dkim_aligned:
        summary = "DKIM aligns with your domain"
        summary += (
            f"; SPF does not: the Return-Path is on {return_path}."
            if return_path
            else "; SPF does not: the sending service uses its own Return-Path."
        )
    elif spf_aligned:
        summary = "SPF aligns with your domain (the Return-Path is on it); DKIM does not."
    else:
        summary = "Neither SPF nor DKIM authorises the portal for this domain."
    return CheckResult("alignment", ok, "" if ok else "domain.via_shown", summary, facts=facts)


def check_mx(domain: str, resolver) -> CheckResult:
    """Can this domain receive mail at all? (client address domains)."""
    answers: list = []
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        return CheckResult(
            "mx",
            False,
            "delivery.invalid_address",
            "The domain does not exist.",
            [(domain, "MX", "(no such domain)")],
        )
    except dns.resolver.NoAnswer:
        try:
            resolver.resolve(domain, "A")
            return CheckResult(
                "mx",
                True,
                "",
                "No MX, but the domain has an address (A).",
                [(domain, "MX", "(none)")],
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return CheckResult(
                "mx",
                False,
                "delivery.invalid_address",
                "The domain has no mail servers.",
                [(domain, "MX", "(none)")],
            )
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            return CheckResult("mx", False, "", "DNS did not answer.", [(domain, "A", "(none)")])
    except (dns.exception.Timeout, dns.resolver.NoNameservers):
        return CheckResult("mx", False, "", "DNS did not answer.", [(domain, "MX", "(none)")])
    hosts = sorted((r.preference, r.exchange.to_text()) for r in answer)
    answers.extend((domain, "MX", f"{p} {h}") for p, h in hosts)
    if len(hosts) == 1 and hosts[0][1] == ".":
        return CheckResult(
            "mx",
            False,
            "delivery.invalid_address",
            "The domain publishes a null MX: it accepts no mail.",
            answers,
        )
    return CheckResult("mx", True, "", "The domain has mail servers.", answers)


def check_sending_domain(domain: str, service: SendingService, resolver) -> list[CheckResult]:
    spf = check_spf(domain, service, resolver)
    dkim = check_dkim(domain, service, resolver)
    lookup = find_dmarc(domain, resolver)
    configured = bool(service.spf_include or service.dkim or service.sending_ips)
    alignment = check_alignment(domain, service, spf, dkim, lookup.policy)
    # Without a configured sending service there is nothing to align with: not a finding.
    aligned = alignment.ok or not configured
    results = [spf, *dkim, check_dmarc(domain, aligned, resolver, lookup=lookup)]
    if configured:
        results.append(alignment)
    return results


class _TtlRecorder:
    """Wraps a resolver to remember the shortest TTL among the answers it returned."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self._resolver = resolver
        self.min_ttl: int | None = None

    def resolve(self, *args: object, **kwargs: object) -> dns.resolver.Answer:
        answer = self._resolver.resolve(*args, **kwargs)
        ttl = answer.rrset.ttl if answer.rrset is not None else None
        if ttl is not None and (self.min_ttl is None or ttl < self.min_ttl):
            self.min_ttl = ttl
        return answer

    def __getattr__(self, name: str) -> object:
        return getattr(self._resolver, name)


def check_ownership(domain: str, record: str, resolver) -> CheckResult:
    """Whether the domain publishes this firm's verification TXT record. SPF and DKIM only
    show that the domain lets the portal send; this shows which firm the domain belongs to,
    so no other firm can send invoices From it."""
    answers: list = []
    texts = _txt(resolver, domain, answers)
    publish = Record(domain, "TXT", record)
    if texts is None:
        return CheckResult("ownership", False, "", "DNS did not answer.", answers, publish)
    if record in (text.strip() for text in texts):
        return CheckResult("ownership", True, "", "The firm's verification record is there.")
    return CheckResult(
        "ownership",
        False,
        "",
        "To send invoices from this domain, publish the firm's verification record.",
        answers,
        publish,
    )


def check_sending_domain_with_ttl(
    domain: str,
    service: SendingService,
    resolver: dns.resolver.Resolver,
    *,
    ownership_record: str | None = None,
) -> tuple[list[CheckResult], int | None]:
    """The checks, and how long their answers may be trusted (the shortest TTL seen)."""
    recorder = _TtlRecorder(resolver)
    results = check_sending_domain(domain, service, recorder)
    if ownership_record:
        results.append(check_ownership(domain, ownership_record, recorder))
    return results, recorder.min_ttl
