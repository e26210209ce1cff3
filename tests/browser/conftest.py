"""Headless Chromium (Debian's package) driven by Playwright, against the live test server."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

# Playwright's sync API keeps an event loop running in the test thread; Django's ORM then
# refuses to run there unless told the thread is really synchronous (Playwright's advice).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM):
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    yield page
    context.close()


AXE_JS = Path(
    os.environ.get(
        "AXE_CORE_JS",
        Path(__file__).resolve().parents[2] / "var/npm/node_modules/axe-core/axe.min.js",
    )
)
SCREENSHOTS = Path(os.environ.get("PORTAL_SCREENSHOTS", "var/screenshots"))


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE_JS.is_file():
        message = (
            f"{AXE_JS} is missing: npm install --prefix var/npm axe-core@4 (scripts/test.sh does)"
        )
        if os.environ.get("PORTAL_TEST_STRICT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return AXE_JS.read_text()


class Journey:
    """One person's way through the portal: every `step` is screenshotted (under
    PORTAL_SCREENSHOTS/<test>/) and checked by axe-core for serious or critical
    accessibility violations, so each page a journey visits is checked as it is seen."""

    def __init__(self, browser, folder: Path, axe: str) -> None:
        self.browser = browser
        self.folder = folder
        self.axe = axe
        self.count = 0
        self.checked: list[str] = []
        self._contexts: list = []

    def new_page(self, *, locale: str = "en-GB", width: int = 1280, height: int = 900):
        # bypass_csp: axe is injected as a script the portal's own policy would refuse.
        context = self.browser.new_context(
            locale=locale, viewport={"width": width, "height": height}, bypass_csp=True
        )
        self._contexts.append(context)
        return context.new_page()

    def step(self, page, name: str) -> None:
        page.wait_for_load_state("load")
        self.count += 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{slug}.png"), full_page=True)
        serious = axe_violations(page, self.axe)
        self.checked.append(page.url)
        assert not serious, f"{name} ({page.url}): accessibility violations {serious}"

    def close(self, *, failed: bool) -> None:
        for n, context in enumerate(self._contexts, start=1):
            if failed:  # each page as it was left, so a failed journey shows where it stopped
                for m, page in enumerate(context.pages, start=1):
                    page.screenshot(path=str(self.folder / f"failed-{n}-{m}.png"), full_page=True)
            context.close()


def axe_violations(page, axe: str) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe)
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))"""
    )
    return found


@pytest.fixture
def journey(browser, axe_source, request):
    folder = SCREENSHOTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    trip = Journey(browser, folder, axe_source)
    yield trip
    report = getattr(request.node, "journey_call_report", None)
    trip.close(failed=report is None or report.failed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.journey_call_report = report
    return report
