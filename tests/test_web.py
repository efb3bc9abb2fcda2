"""The local web page in real headless Chromium (Debian's, not a downloaded browser)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.family import FAMILY, music

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_page_lists_callbacks_and_opens_a_task(make_relay: Any) -> None:
    """The page lists deliveries; clicking a task shows its state, track titles, links, and no token."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    relay = make_relay()
    relay.post(music("first", task="web1"))
    relay.post(music("complete", task="web1"))
    relay.post(FAMILY["music-error-null-data"][0])
    wait_for(lambda: len(relay.deliveries()) == 3)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page()
        page.goto(relay.admin + "/")
        rows = page.locator("#deliveries tbody tr")
        assert rows.count() == 3
        assert "failed 451" in page.locator("#deliveries").inner_text()
        assert "test-token" not in page.content()
        page.locator("a.task", has_text="web1").first.click()
        page.wait_for_url("**/tasks/web1")
        assert page.locator("#state").inner_text() == "complete"
        assert "Iron Man" in page.locator("section.track .title").first.inner_text()
        assert page.locator("a.audio").first.get_attribute("href") == "https://example.cn/iron.mp3"
        page.goto(relay.admin + "/?failed=1")
        assert page.locator("#deliveries tbody tr").count() == 1
        browser.close()
