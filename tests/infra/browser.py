"""Headless Chromium for the tests: Debian's /usr/bin/chromium driven by Playwright's Python
package (no downloaded browser)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.infra import require_tool

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def browser_page(width: int = 1366, height: int = 900) -> Iterator[Page]:
    """A fresh page in a headless Chromium with a laptop-sized viewport; skipped (failed under
    CI) when Chromium or Playwright is missing."""
    require_tool(CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()
