"""``next`` on any form: a path on this site is followed, anything else falls back to the
form's own page. Never a server error, never another site."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = [
    "x",
    "clients",
    "portal:home",
    "//evil.test/",
    "https://evil.test/",
    "http:/evil.test",
    "/\\evil.test",
    "\\\\evil.test",
    "javascript:alert(1)",
    " /clients/",
    "/clients/\r\nLocation: https://evil.test/",
    "",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_send_a_test_to_myself_falls_back_for_a_next_that_is_not_a_local_path(owner_client, target):
    response = owner_client.post(reverse("troubleshooting:send_test"), {"next": target})

    assert response.status_code == 302
    assert response["Location"] == reverse("troubleshooting:dashboard")


@pytest.mark.parametrize("target", HOSTILE)
def test_ignoring_unlinked_mail_falls_back_for_a_next_that_is_not_a_local_path(
    owner_client, target
):
    response = owner_client.post(
        reverse("mailsync:unlinked_ignore"), {"address": "someone@else.test", "next": target}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("mailsync:unlinked")


def test_a_local_path_is_followed(owner_client):
    response = owner_client.post(
        reverse("mailsync:unlinked_ignore"),
        {"address": "someone@else.test", "next": "/mail/unlinked/?page=2"},
    )

    assert response["Location"] == "/mail/unlinked/?page=2"


def test_no_view_reads_next_except_through_the_one_helper():
    pattern = re.compile(r"""\.(GET|POST)(\.get\(|\[)\s*["']next["']""")
    readers = [
        str(path.relative_to(ROOT))
        for app in ("portal", "accounts", "mailsync", "invoicing", "troubleshooting")
        for path in (ROOT / app).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert readers == ["portal/redirects.py"]
