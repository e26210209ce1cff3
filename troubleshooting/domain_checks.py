"""Checks of a firm's sending domain: SPF, DKIM, DMARC and MX, with the record to publish.

Pure functions over a dnspython resolver: the app passes one built from settings
(portal.dns.make_resolver), tests pass one aimed at a DNS server on loopback. Each failed
check names a problem code from the catalogue and, where DNS can fix it, the exact record
to publish, merged with what is already there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import dns.exception
import dns.resolver

from troubleshooting.dnsrecords import parse_dkim, parse_dmarc
from troubleshooting.spf import check_host, count_spf_lookups, spf_record_merge

MAX_SPF_LOOKUPS = 10


@dataclass(frozen=True)
class SendingService:
    """How the portal sends: what a firm's domain must authorise."""

    spf_include: str = ""  # e.g. "_spf.portal.example"
    sending_ips: tuple[str, ...] = ()
    dkim: tuple[tuple[str, str], ...] = ()  # (selector, CNAME target)


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


def check_dkim(domain: str, service: SendingService, resolver) -> list[CheckResult]:
    results = []
    for selector, target in service.dkim:
        name = f"{selector}._domainkey.{domain}"
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
                    f"dkim:{selector}",
                    False,
                    "",
                    "DNS did not answer.",
                    [(name, "CNAME", "(no answer)")],
                )
            )
            continue
        publish = Record(name, "CNAME", target)
        if cname is not None:
            ok = cname.lower() == target.lower().rstrip(".")
            results.append(
                CheckResult(
                    f"dkim:{selector}",
                    ok,
                    "" if ok else "domain.dkim_missing",
                    "DKIM key published." if ok else f"The CNAME points to {cname}, not {target}.",
                    answers,
                    None if ok else publish,
                )
            )
            continue
        texts = _txt(resolver, name, answers) or []
        keys = []
        for text in texts:
            try:
                keys.append(parse_dkim(text))
            except ValueError:
                continue
        ok = any(not key["revoked"] for key in keys)
        results.append(
            CheckResult(
                f"dkim:{selector}",
                ok,
                "" if ok else "domain.dkim_missing",
                "DKIM key published." if ok else "No usable DKIM key at this selector.",
                answers,
                None if ok else publish,
            )
        )
    return results


def check_dmarc(domain: str, aligned: bool, resolver) -> CheckResult:
    name = f"_dmarc.{domain}"
    answers: list = []
    texts = _txt(resolver, name, answers)
    starting = Record(name, "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}")
    if texts is None:
        return CheckResult("dmarc", False, "", "DNS did not answer; try again later.", answers)
    records = [t for t in texts if t.lower().replace(" ", "").startswith("v=dmarc1")]
    if not records:
        return CheckResult(
            "dmarc", False, "domain.dmarc_missing", "No DMARC record.", answers, starting
        )
    try:
        policy = parse_dmarc(records[0])
    except ValueError as exc:
        return CheckResult(
            "dmarc",
            False,
            "domain.dmarc_missing",
            f"The DMARC record cannot be used: {exc}",
            answers,
            starting,
        )
    if policy["p"] in ("quarantine", "reject") and not aligned:
        return CheckResult(
            "dmarc",
            False,
            "domain.dmarc_misaligned",
            f"Policy p={policy['p']} would reject the portal's mail until SPF or DKIM align.",
            answers,
            Record(name, "TXT", records[0].replace(f"p={policy['p']}", "p=none")),
        )
    return CheckResult("dmarc", True, "", f"DMARC policy p={policy['p']}.", answers)


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
    aligned = spf.ok or (bool(dkim) and all(d.ok for d in dkim))
    results = [spf, *dkim, check_dmarc(domain, aligned, resolver)]
    if not aligned and (service.spf_include or service.dkim):
        results.append(
            CheckResult(
                "alignment",
                False,
                "domain.via_shown",
                "Neither SPF nor DKIM authorises the portal for this domain.",
            )
        )
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
