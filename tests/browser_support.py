"""Shared pieces of the browser tests: a `streamlit run app.py` server on 127.0.0.1 and
Playwright helpers for Debian's Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
LOCAL_PREFIXES = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamlit_server(log_path: Path, **env: str) -> Iterator[str]:
    """Serve app.py on a free 127.0.0.1 port with extra environment `env`; yield its URL.

    Autopreparation of the default classifier is off unless `env` turns it on.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: apt-get install chromium chromium-driver")
    port = free_port()
    full_env = {**os.environ, "HEADSCOPE_AUTOPREPARE": "0", **env}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    command += ["--server.address", "127.0.0.1", "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start:\n{log_path.read_text()}")
                time.sleep(0.3)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


@contextmanager
def chromium_page(**page_options: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh headless Chromium page and the list of every URL it requests."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    options = {"viewport": {"width": 1400, "height": 1000}, **page_options}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**options)
            page.on("request", lambda request: requests.append(request.url))
            yield page, requests
        finally:
            browser.close()


def external_requests(requests: list[str]) -> list[str]:
    """The requests that left 127.0.0.1 (an offline dashboard makes none)."""
    return [url for url in requests if not url.startswith(LOCAL_PREFIXES)]
