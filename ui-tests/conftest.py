"""Fixtures for the browser tests: the real hub, package index and repositories of tests/,
and a page in Debian's Chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest

# pytest finds fixtures by the names a conftest module defines: importing them re-exports them
from tests.conftest import hub, need, new_repo, pkg_index, repos_root  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
# the machine's network is closed: no background traffic, no QUIC, no GPU
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page():
    """A fresh browser page; the sync API lives only inside the (sync) test using it."""
    need("Debian chromium", CHROMIUM.exists())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        # what went wrong in the page, shown with a failure: errors, refused API calls
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.request.method} {r.url}")
                if r.status >= 400 and "/api/" in r.url
                else None
            ),
        )
        page.problems = problems
        try:
            yield page
        finally:
            if problems:
                print("problems seen in the browser:", *problems, sep="\n  ")
            context.close()
            browser.close()
