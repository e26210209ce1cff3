"""The openspf RFC 7208 test suite, run against troubleshooting.spf over real DNS packets.

Each scenario's zone is served by the loopback DNS server and every test case is one
pytest id, ``<scenario>/<test>``. The suite lives in the read-only shared folder
(``$PORTAL_SHARED_DIR``, else the ``shared`` directory next to the repository).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
import yaml

from tests.servers.dns_fixtures import make_resolver
from tests.servers.dns_server import TIMEOUT, LoopbackDNSServer
from troubleshooting.spf import check_mail_from

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("PORTAL_SHARED_DIR") or REPO_ROOT.parent / "shared")
SUITE = SHARED_DIR / "conformance" / "spf" / "rfc7208-tests.yml"

# The only TIMEOUT cases wait for the resolver to give up, so keep that short.
RESOLVER_LIFETIME = 0.5

# Cases this implementation does not pass, "scenario/test" -> why. Run as strict xfails,
# so fixing one turns the suite red until it is removed from here.
KNOWN_FAILURES: dict[str, str] = {}

# Result names the suite's older tests still use.
OLD_RESULT_NAMES = {"unknown": "permerror", "error": "temperror"}


def _load_suite() -> list[dict[str, Any]]:
    if not SUITE.is_file():
        reason = f"SPF conformance suite not found at {SUITE} (set PORTAL_SHARED_DIR)"
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    with SUITE.open("rb") as handle:
        return [scenario for scenario in yaml.safe_load_all(handle) if scenario]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def served_zone(zonedata: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Apply the reference driver's conventions (see the suite's README).

    Type SPF records are also served as TXT, after the name's other records, unless the
    name has a TXT entry of its own; ``TXT: NONE`` is such an entry but serves nothing.
    """
    zone: dict[str, list[Any]] = {}
    for name, entries in zonedata.items():
        served: list[Any] = []
        copies: list[Any] = []
        has_txt = False
        for entry in entries:
            if entry == TIMEOUT:
                served.append(TIMEOUT)
                continue
            ((rtype, value),) = entry.items()
            has_txt = has_txt or rtype == "TXT"
            if rtype == "SPF":
                copies.append({"TXT": value})
            if value != "NONE":
                served.append({rtype: value})
        zone[name] = served if has_txt else served + copies
    return zone


def _cases() -> list[Any]:
    cases = []
    for scenario in _load_suite():
        zone = served_zone(scenario["zonedata"])
        for name, case in scenario["tests"].items():
            case_id = f"{_slug(scenario['description'])}/{name}"
            marks = []
            if case_id in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[case_id], strict=True))
            cases.append(pytest.param(zone, case, id=case_id, marks=marks))
    return cases


@pytest.fixture(scope="module")
def resolver(dns_server: LoopbackDNSServer) -> dns.resolver.Resolver:
    return make_resolver(dns_server, timeout=RESOLVER_LIFETIME)


@pytest.mark.parametrize(("zone", "case"), _cases())
def test_rfc7208(
    dns_server: LoopbackDNSServer,
    resolver: dns.resolver.Resolver,
    zone: dict[str, list[Any]],
    case: dict[str, Any],
) -> None:
    dns_server.set_zone(zone)
    result = check_mail_from(
        case["host"],
        case["mailfrom"],
        case["helo"],
        resolver=resolver,
        # The suite's expected explanations assume the reference driver's default.
        default_explanation="DEFAULT",
    )
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    acceptable = [OLD_RESULT_NAMES.get(name, name) for name in expected]
    said = "\n".join(f"  {a.name} {a.rtype}: {a.text}" for a in result.answers)
    assert result.result in acceptable, (
        f"{case.get('description', '')}\nrecord: {result.record!r}\n"
        f"problem: {result.problem}\nDNS:\n{said}"
    )
    if "explanation" in case:
        assert result.explanation == case["explanation"]
