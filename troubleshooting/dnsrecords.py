"""Parsers for the DMARC (RFC 7489) and DKIM key (RFC 6376) TXT records.

Pure Python with no Django imports. Both records are tag lists (``tag=value; ...``); the
parsers return plain dicts so templates can show them, and raise ValueError with a message
a person can act on when a record cannot be used.
"""

from __future__ import annotations

import re
from typing import TypedDict

__all__ = ["DkimKey", "DmarcPolicy", "parse_dkim", "parse_dmarc"]

_TAG_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})
_ALIGNMENT_MODES = frozenset({"r", "s"})


class DmarcPolicy(TypedDict):
    v: str
    p: str
    sp: str
    adkim: str
    aspf: str
    pct: int
    rua: list[str]


class DkimKey(TypedDict):
    v: str
    k: str
    p: str
    revoked: bool
    testing: bool


def _tag_list(txt: str, kind: str) -> list[tuple[str, str]]:
    """Split ``tag=value; ...`` (RFC 6376 3.2, which RFC 7489 reuses)."""
    tags: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in txt.split(";"):
        if not part.strip():
            continue  # a trailing ";" or an empty spec is allowed
        name, equals, value = part.partition("=")
        name = name.strip()
        if not equals or not _TAG_NAME_RE.fullmatch(name):
            raise ValueError(f"{kind} record has a malformed tag: {part.strip()!r}")
        # DKIM and DMARC tag names are case-sensitive ("v", "p"...), all lower case.
        if name in seen:
            raise ValueError(f"{kind} record repeats the {name}= tag")
        seen.add(name)
        tags.append((name, value.strip()))
    return tags


def parse_dmarc(txt: str) -> DmarcPolicy:
    """Parse a DMARC record such as ``v=DMARC1; p=reject; rua=mailto:d@example.com``.

    Fills in the RFC 7489 defaults: ``sp`` follows ``p``, alignment is relaxed (``r``),
    ``pct`` is 100, ``rua`` is empty. A record with reporting addresses but no ``p`` counts
    as ``p=none`` (RFC 7489 6.6.3). Unknown tags are ignored, as the RFC requires.
    """
    tags = _tag_list(txt, "DMARC")
    if not tags or tags[0] != ("v", "DMARC1"):
        raise ValueError("not a DMARC record: it must start with v=DMARC1")
    values = dict(tags)
    rua = [uri.strip() for uri in values.get("rua", "").split(",") if uri.strip()]

    policy = values.get("p", "").lower()
    if not policy:
        if not rua:
            raise ValueError("DMARC record has no p= policy")
        policy = "none"
    if policy not in _DMARC_POLICIES:
        raise ValueError(f"DMARC p= must be none, quarantine or reject, not {policy!r}")
    subdomain_policy = values.get("sp", policy).lower()
    if subdomain_policy not in _DMARC_POLICIES:
        raise ValueError(f"DMARC sp= must be none, quarantine or reject, not {subdomain_policy!r}")
    alignment = {}
    for tag in ("adkim", "aspf"):
        mode = values.get(tag, "r").lower()
        if mode not in _ALIGNMENT_MODES:
            raise ValueError(f"DMARC {tag}= must be r or s, not {mode!r}")
        alignment[tag] = mode
    pct_text = values.get("pct", "100")
    if not pct_text.isdigit() or int(pct_text) > 100:
        raise ValueError(f"DMARC pct= must be a whole number from 0 to 100, not {pct_text!r}")
    return DmarcPolicy(
        v="DMARC1",
        p=policy,
        sp=subdomain_policy,
        adkim=alignment["adkim"],
        aspf=alignment["aspf"],
        pct=int(pct_text),
        rua=rua,
    )


def parse_dkim(txt: str) -> DkimKey:
    """Parse a DKIM key record such as ``v=DKIM1; k=rsa; p=MIIB...``.

    ``p`` comes back with its folding whitespace removed; an empty ``p=`` means the key has
    been revoked (RFC 6376 3.6.1), reported as ``revoked``. ``testing`` is the ``t=y`` flag.
    """
    tags = _tag_list(txt, "DKIM")
    values = dict(tags)
    if "v" in values and (tags[0][0] != "v" or values["v"] != "DKIM1"):
        raise ValueError("DKIM key record: v= must come first and be DKIM1")
    if "p" not in values:
        raise ValueError("DKIM key record has no p= public key")
    key = re.sub(r"\s+", "", values["p"])
    if not _BASE64_RE.fullmatch(key):
        raise ValueError("DKIM p= is not base64")
    flags = {flag.strip() for flag in values.get("t", "").split(":")}
    return DkimKey(
        v=values.get("v", "DKIM1"),
        k=values.get("k", "rsa").lower(),
        p=key,
        revoked=not key,
        testing="y" in flags,
    )
