"""Journey 8: in each of the six languages, the Problems page, the problem guides, Settings
and the Pay Now page show no string left in English, and dates in the locale's format.

"Untranslated" is decided against the catalogues, not by eye: every visible text node (and
placeholder, title and label text) is compared with the English msgids whose translation in
that language differs; a node equal to such a msgid was not translated."""

from __future__ import annotations

import re
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.utils import formats, translation
from playwright.sync_api import expect

from accounts.models import Role
from invoicing.sending import invoice_send
from tests.browser.helpers import sign_in
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory, MembershipFactory
from tests.invoicing import factories
from tests.invoicing.factories import invoice_with_lines
from tests.servers import smtp as smtp_fixtures
from tests.servers.smtp import UNKNOWN

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

smtp_server = smtp_fixtures.smtp_server
smtp = smtp_fixtures.smtp
tasks_run_inline = factories.tasks_run_inline

LANGUAGES = [code for code, _name in settings.LANGUAGES]
PAY_LINK = re.compile(r"(http://[^/\s]+/pay/[A-Za-z0-9_-]{43}/)")

VISIBLE_TEXT = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    // The language switcher names each language in its own language, on purpose.
    if (!el || el.closest('script, style, template, #language-select')) continue;
    const text = node.textContent.replace(/\\s+/g, ' ').trim();
    if (text) out.push(text);
  }
  for (const el of document.querySelectorAll('[placeholder], [title], [aria-label]')) {
    for (const name of ['placeholder', 'title', 'aria-label']) {
      const text = (el.getAttribute(name) || '').trim();
      if (text) out.push(text);
    }
  }
  return out;
}"""


def _changed_msgids(language: str) -> set[str]:
    """English msgids whose translation in `language` is not the same text."""
    path = Path(settings.LOCALE_PATHS[0]) / language / "LC_MESSAGES" / "django.po"
    english: set[str] = set()
    for entry in polib.pofile(str(path)):
        if entry.obsolete or "fuzzy" in entry.flags:
            continue
        if entry.msgid_plural:
            pairs = [(entry.msgid, entry.msgstr_plural.get(0, "")), (entry.msgid_plural, "")]
            forms = set(entry.msgstr_plural.values())
            english.update(msgid for msgid, _ in pairs if msgid not in forms)
        elif entry.msgstr and entry.msgstr != entry.msgid:
            english.add(entry.msgid)
    return {re.sub(r"\s+", " ", msgid).strip() for msgid in english}


def _untranslated(page, changed: set[str]) -> list[str]:
    return sorted({text for text in page.evaluate(VISIBLE_TEXT) if text in changed})


@pytest.fixture
def firm_with_a_problem_and_an_invoice(firm, settings, live_server, smtp, tasks_run_inline):
    settings.SITE_URL = live_server.url
    owner = MembershipFactory(firm=firm, role=Role.OWNER, user__email="owner@alder.test")
    client = ClientFactory(firm=firm, display_name="Birch Dental")
    contact = ContactFactory(client=client, name="Anna")
    ContactAddressFactory(contact=contact, address="anna@client.test")
    ContactAddressFactory(contact=contact, address=UNKNOWN, is_primary=False)
    invoice = invoice_with_lines(client=client, lines=1)
    invoice_send(invoice=invoice)
    [email] = [r for r in smtp.received if r.rcpt_tos == ["anna@client.test"]]
    link = PAY_LINK.search(email.message.get_body(("plain",)).get_content()).group(1)
    invoice.refresh_from_db()
    return owner, invoice, link


def _speak(page, base_url: str, language: str) -> None:
    page.context.add_cookies(
        [{"name": settings.LANGUAGE_COOKIE_NAME, "value": language, "url": base_url}]
    )


def test_every_page_speaks_each_language_and_writes_its_dates(
    journey, live_server, firm_with_a_problem_and_an_invoice
):
    # One journey through the six languages (not six tests): the data and the sign-in are
    # shared, which keeps the browser suite inside its time budget.
    owner, invoice, link = firm_with_a_problem_and_an_invoice
    member = journey.new_page()
    sign_in(member, live_server.url, owner.user.email)
    client = journey.new_page(width=390, height=844)
    english_left: dict[str, list[str]] = {}
    for language in LANGUAGES:
        changed = _changed_msgids(language) if language != "en" else set()
        # The check has teeth: the Settings heading, left in English, would be caught.
        assert language == "en" or "Settings" in changed
        _speak(member, live_server.url, language)
        for name, path in [
            ("problems", "/problems/"),
            ("guides", "/problems/guides/"),
            ("settings", "/settings/"),
        ]:
            member.goto(live_server.url + path)
            assert member.locator("html").get_attribute("lang") == language
            journey.step(member, f"{name} in {language}")
            english_left[f"{name} ({language})"] = _untranslated(member, changed)

        _speak(client, live_server.url, language)
        client.goto(link)
        assert client.locator("html").get_attribute("lang") == language
        journey.step(client, f"pay now in {language}")
        english_left[f"pay now ({language})"] = _untranslated(client, changed)
        with translation.override(language):
            issued = formats.date_format(invoice.issue_date, "DATE_FORMAT")
            due = formats.date_format(invoice.due_date, "DATE_FORMAT")
        expect(client.locator("main")).to_contain_text(issued)
        expect(client.locator("main")).to_contain_text(due)

    assert {page: left for page, left in english_left.items() if left} == {}
