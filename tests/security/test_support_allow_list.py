"""Under a support session, exactly the allow-list is reachable; every other URL is refused.

The walk requests every pattern of the URLconf (the firm's pages, allauth's account and MFA
pages, the admin, public token pages) with GET and POST, as the support team inside a firm
that let them in. A new URL is refused to support until someone adds it to
`accounts.support.SUPPORT_ALLOWED_VIEWS` and to EXPECTED_REACHABLE below.
"""

from __future__ import annotations

import itertools
import re

import pytest
from django.conf import settings
from django.test import Client as HttpClient
from django.urls import Resolver404, get_resolver, resolve

from accounts.models import AuditEntry, Invitation, Membership, SupportGrant
from accounts.support import SESSION_GRANT_KEY, SUPPORT_ALLOWED_VIEWS
from tests.security.conftest import enter
from tests.test_tenant_isolation import PARAMETERS, _payload, _walk, firm_a  # noqa: F401

REFUSAL_TEMPLATE = "accounts/support_forbidden.html"

# The spec: what support may reach inside a firm. Written out here (not imported) so that
# widening the allow-list in code fails this test until the change is deliberate.
EXPECTED_REACHABLE = {
    *(
        f"portal:{n}"
        for n in [
            "home",
            "client_list",
            "client_create",
            "client_detail",
            "client_edit",
            "client_documents",
            "contact_create",
            "contact_edit",
            "contact_delete",
            "contact_addresses_add",
            "address_edit",
            "address_delete",
            "document_upload",
            "document_download",
        ]
    ),
    *(
        f"invoicing:{n}"
        for n in [
            "invoice_list",
            "invoice_create",
            "invoices_send_drafts",
            "invoice_detail",
            "invoice_edit",
            "invoice_print",
            "invoice_void",
            "invoice_send",
            "invoice_send_test",
            "payment_record",
            "delivery_resend",
            "pay_link_revoke",
            "client_invoices",
            "suppressions",
            "suppression_remove",
        ]
    ),
    *(
        f"mailsync:{n}"
        for n in [
            "client_email",
            "message",
            "message_images",
            "compose",
            "reply",
            "written_email",
            "written_dismiss",
            "client_sender",
            "unlinked",
            "unlinked_choose_client",
            "unlinked_link",
            "unlinked_ignore",
            "unlinked_ignored",
            "unlinked_unignore",
            "sync_now",
            "folders",
            "status",
        ]
    ),
    *(
        f"troubleshooting:{n}"
        for n in [
            "dashboard",
            "guides",
            "mark_handled",
            "recheck_domain",
            "allowlist",
            "send_test",
            "fix_address_resend",
            "client_problems",
            "status",
        ]
    ),
    "accounts:support",
    "accounts:support_enter",
    "accounts:support_exit",
    "account_logout",
    "set_language",
}

# Never reachable, named one by one because each is a way to keep or widen access.
MUST_BE_REFUSED = {
    "accounts:invite",
    "accounts:invitation_accept",
    "accounts:invitation_revoke",
    "accounts:membership_role",
    "accounts:membership_remove",
    "accounts:members",
    "accounts:editor_access",
    "accounts:editor_access_save",
    "accounts:editor_access_revoke",
    "accounts:firm_profile",
    "accounts:switch_firm",
    "accounts:my_account",
    "accounts:audit_log",
    "invoicing:billing_settings",
    "mailsync:credentials",
    "mailsync:shared_sending_addresses",
    "portal:outbox",
    "portal:outbox_detail",
    "account_change_password",
    "account_email",
    "account_set_password",
    "mfa_index",
    "mfa_activate_totp",
    "mfa_deactivate_totp",
    "mfa_generate_recovery_codes",
    "admin:accounts_membership_add",
    "admin:accounts_user_changelist",
}

# Paths answered before the session is read (machine-to-machine webhooks): no support
# session exists there, so nothing is reached under one.
SESSIONLESS_PREFIXES = tuple(p.lstrip("/") for p in settings.WEBHOOK_PATHS)

# Values tried for a regular-expression group (allauth's keys, the admin's app labels).
REGEX_CANDIDATES = ("1", "abc", "1-abc", "accounts", "1-set-password")
CONVERTER_DEFAULTS = {"int": "1", "path": "1", "str": "x", "slug": "x"}


def _patterns():
    seen = set()
    for namespace, name, route, converters in _walk(get_resolver().url_patterns):
        if route.startswith(SESSIONLESS_PREFIXES):
            continue
        full = f"{namespace}:{name}" if namespace and name else name
        key = full or route
        if key not in seen:
            seen.add(key)
            yield full, route, dict(converters)


PATTERNS = list(_patterns())


def _value(param: str, converter, firm) -> str:
    if param in PARAMETERS:
        return str(PARAMETERS[param](firm))
    kind = type(converter).__name__.removesuffix("Converter").lower()
    return CONVERTER_DEFAULTS.get(kind, "x")


def _fill_groups(route: str, values: tuple[str, ...]) -> str:
    it = iter(values)
    return re.sub(r"\(\?P<\w+>(?:[^()]|\([^()]*\))*\)", lambda _m: next(it), route)


def _url(full_name: str | None, route: str, converters: dict, firm) -> str:
    if "(?P<" not in route and "^" not in route:
        return "/" + re.sub(
            r"<(?:\w+:)?(\w+)>", lambda m: _value(m[1], converters[m[1]], firm), route
        )
    # A regular-expression route (allauth's keys, the admin's app labels): try values until
    # the path resolves back to this route.
    names = re.findall(r"\(\?P<(\w+)>", route)
    for values in itertools.product(REGEX_CANDIDATES, repeat=len(names)):
        path = "/" + _fill_groups(route, values)
        path = path.replace("^", "").replace("$", "").replace("(_mime)?", "")
        try:
            match = resolve(path)
        except Resolver404:
            continue
        if full_name is None or match.view_name == full_name:
            return path
    raise AssertionError(f"cannot build a URL for {full_name} ({route})")


def _refused(response) -> bool:
    return response.status_code == 403 and REFUSAL_TEMPLATE in [t.name for t in response.templates]


def test_the_code_allow_list_is_the_specified_one():
    assert SUPPORT_ALLOWED_VIEWS == EXPECTED_REACHABLE
    assert not (SUPPORT_ALLOWED_VIEWS & MUST_BE_REFUSED)


def test_the_walk_covers_every_kind_of_page():
    names = {full for full, _route, _conv in PATTERNS}
    assert names >= EXPECTED_REACHABLE
    assert names >= MUST_BE_REFUSED
    assert len(PATTERNS) >= 250


def test_a_support_session_reaches_exactly_the_allow_list(firm_a, support_user):  # noqa: F811
    firm = firm_a.client.firm
    grant = firm_a.grant
    http = enter(HttpClient(), support_user, grant)
    before = {
        "memberships": list(Membership.objects.values_list("pk", "user_id", "firm_id", "role")),
        "invitations": list(Invitation.objects.values_list("pk", "email", "role", "revoked_at")),
        "grants": list(SupportGrant.objects.values_list("pk", "expires_at", "revoked_at")),
    }
    reachable, refused = set(), set()
    refusals = 0
    for full_name, route, converters in PATTERNS:
        url = _url(full_name, route, converters, firm_a)
        for method in ("get", "post"):
            data = _payload() if method == "post" else None
            response = getattr(http, method)(url, data=data)
            if response.streaming:
                # Reading a download to its end is what closes its file (the test client's
                # wrapper closes the response then).
                b"".join(response.streaming_content)
            label = full_name or route
            if _refused(response):
                refused.add(label)
                refusals += 1
            else:
                reachable.add(label)
            if http.session.get(SESSION_GRANT_KEY) != grant.pk:
                # Signing out or leaving ends the session: start a new one for the next URL.
                http = enter(HttpClient(), support_user, grant)

    assert reachable == EXPECTED_REACHABLE, (
        f"reachable but not allowed: {sorted(reachable - EXPECTED_REACHABLE)}; "
        f"allowed but refused: {sorted(EXPECTED_REACHABLE - reachable)}"
    )
    assert refused >= MUST_BE_REFUSED
    assert not (reachable & refused), sorted(reachable & refused)
    # Nothing that decides who may act in the firm changed, and each refusal is on record.
    after = {
        "memberships": list(Membership.objects.values_list("pk", "user_id", "firm_id", "role")),
        "invitations": list(Invitation.objects.values_list("pk", "email", "role", "revoked_at")),
        "grants": list(SupportGrant.objects.values_list("pk", "expires_at", "revoked_at")),
    }
    assert after == before
    assert AuditEntry.objects.filter(firm=firm, kind="refused").count() == refusals


@pytest.mark.parametrize("name", sorted(MUST_BE_REFUSED - {"admin:accounts_membership_add"}))
def test_the_refusal_page_says_why_in_plain_words(firm_a, support_user, name):  # noqa: F811
    http = enter(HttpClient(), support_user, firm_a.grant)
    full, route, converters = next(p for p in PATTERNS if p[0] == name)
    response = http.get(_url(full, route, converters, firm_a))
    assert _refused(response)
    assert "Ask an owner to do this" in response.content.decode()
