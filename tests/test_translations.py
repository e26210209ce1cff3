"""Six languages, complete: every string the code shows has a translation in each catalogue,
and pages render without English left in them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.urls import reverse

from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, DocumentFactory

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = [code for code, _name in settings.LANGUAGES if code != "en"]
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\{ *\w+ *\}\}")


def _catalogue(code: str) -> polib.POFile:
    return polib.pofile(str(ROOT / "locale" / code / "LC_MESSAGES" / "django.po"))


@pytest.mark.parametrize("code", LANGUAGES)
def test_every_entry_is_translated_and_none_is_fuzzy(code):
    catalogue = _catalogue(code)
    assert [e.msgid for e in catalogue.untranslated_entries()] == []
    assert [e.msgid for e in catalogue.fuzzy_entries()] == []


@pytest.mark.parametrize("code", LANGUAGES)
def test_translations_keep_every_placeholder(code):
    for entry in _catalogue(code).translated_entries():
        expected = sorted(PLACEHOLDER.findall(entry.msgid_plural or entry.msgid))
        forms = entry.msgstr_plural.values() if entry.msgid_plural else [entry.msgstr]
        for form in forms:
            found = sorted(PLACEHOLDER.findall(form))
            # A singular form may say "one" instead of showing the count.
            assert set(found) <= set(expected) and (found == expected or entry.msgid_plural), (
                f"{code}: {entry.msgid!r} -> {form!r}"
            )


def test_the_catalogues_hold_every_string_in_the_code(tmp_path):
    if shutil.which("xgettext") is None:
        message = "GNU gettext (xgettext) is not installed; apt-get install gettext"
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    # Extract into a copy, so the test never rewrites the real catalogues.
    copy = tmp_path / "tree"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "var", "tests", "bench", "*.mo", "__pycache__", "staticfiles"
    )
    shutil.copytree(ROOT, copy, ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "makemessages",
            "-l",
            "fi",
            "--no-location",
            "-i",
            "staticfiles/*",
            "-i",
            "scripts/*",
        ],
        cwd=copy,
        env={**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "portal.settings"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    fresh = polib.pofile(str(copy / "locale" / "fi" / "LC_MESSAGES" / "django.po"))
    missing = [e.msgid for e in fresh if not e.obsolete and not e.translated()]
    assert missing == [], "run makemessages and translate these in every language"


PAGES = [
    ("portal:client_list", False),
    ("portal:client_detail", True),
    ("mailsync:client_email", True),
    ("portal:client_documents", True),
    ("invoicing:client_invoices", True),
    ("troubleshooting:client_problems", True),
    ("portal:client_create", False),
    ("portal:client_edit", True),
    ("invoicing:invoice_list", False),
    ("invoicing:invoice_create", False),
    ("invoicing:suppressions", False),
    ("troubleshooting:dashboard", False),
    ("troubleshooting:guides", False),
    ("troubleshooting:allowlist", False),
    ("portal:outbox", False),
    ("accounts:settings", False),
    ("accounts:members", False),
    ("accounts:my_account", False),
    ("accounts:firm_profile", False),
    ("accounts:editor_access", False),
    ("accounts:audit_log", False),
]


def _english_phrases(code: str) -> set[str]:
    """Our own English sentences that must not survive translation (brand names do)."""
    phrases = set()
    for entry in _catalogue(code):
        text = entry.msgid
        sentence = " " in text and len(text) >= 12 and not PLACEHOLDER.search(text)
        if sentence and text not in entry.msgstr:
            phrases.add(text)
    return phrases


@pytest.fixture
def sample_client(firm):
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client))
    DocumentFactory(client=client)
    return client


@pytest.mark.parametrize("code", LANGUAGES)
def test_every_page_renders_without_english_left(code, owner_client, sample_client):
    owner_client.cookies[settings.LANGUAGE_COOKIE_NAME] = code
    phrases = _english_phrases(code)
    for name, needs_client in PAGES:
        url = reverse(name, args=[sample_client.pk] if needs_client else [])
        html = owner_client.get(url).content.decode()
        assert f'lang="{code}"' in html
        text = re.sub(r"<[^>]+>", " ", html)
        text = re.sub(r"\s+", " ", text)
        left = [p for p in phrases if p in text]
        assert left == [], f"{name} in {code} still shows English: {left}"


@pytest.mark.parametrize("code", LANGUAGES)
def test_the_sign_in_page_is_translated(code, client, db):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = code
    html = client.get("/accounts/login/").content.decode()
    # allauth's own heading, translated by allauth's catalogue, inside our layout
    assert "Sign In" not in html
    assert f'lang="{code}"' in html
