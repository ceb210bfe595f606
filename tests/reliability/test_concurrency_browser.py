"""Several browser sessions on one `streamlit run` server at the same time (tiny model).

* two sessions start a pruning job each: the executor has one slot, so the second job waits and
  its page shows its place in the queue; both finish, both runs are stored, and each session
  shows its own result;
* twenty sessions open the Runs page at once and each lists the stored run (five then select it
  and draw its heatmap), with no error on any page and no traceback in the server log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    external_requests,
    streamlit_server,
)
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from test_browser_flow import (
    LONG,
    assert_no_error,
    choose_model_and_data,
    go_to,
    pick,
    toggle_row,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOADS = 20
# Twenty sessions first drawing one page share the server's CPU (~50 s on two cores).
LOAD_TIMEOUT = 4 * LONG


@contextmanager
def chromium_contexts(count: int) -> Iterator[tuple[list[Page], list[str], list[str]]]:
    """``count`` pages, each in its own browser context (its own cookies: its own Streamlit
    session), in one headless Chromium; plus every URL requested and every page error."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(count):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.on("request", lambda request: requested.append(request.url))
                page.on("pageerror", lambda error: errors.append(str(error)))
                pages.append(page)
            yield pages, requested, errors
        finally:
            browser.close()


def fill_prune_form(page: Page, *, name: str, seed: int, recovery_steps: int) -> None:
    """Prune page, random heads at half sparsity, with this run name, seed and recovery."""
    go_to(page, "Prune")
    expect(page.get_by_text("test accuracy", exact=False).first).to_be_visible(timeout=LONG)
    pick(page, "Method", "Random heads (random)")
    # Values typed into the previous method's form would be lost with it: wait until the random
    # method's form (its widgets carry the key "cfg-random:<field>") is the only form left.
    expect(page.locator(".st-key-cfg-random-sparsity")).to_be_visible(timeout=LONG)
    expect(page.get_by_test_id("stForm")).to_have_count(1, timeout=LONG)
    wait_idle(page)
    form = page.get_by_test_id("stForm")
    form.get_by_role("spinbutton", name="Head sparsity", exact=True).fill("0.5")
    form.get_by_role("spinbutton", name="Seed", exact=True).fill(str(seed))
    form.get_by_role("spinbutton", name="Scoring texts", exact=True).fill("16")
    form.get_by_role("spinbutton", name="Recovery fine-tuning steps").fill(str(recovery_steps))
    form.get_by_role("textbox", name="Run name").fill(name)


def result_heading(page: Page, name: str) -> Any:
    return page.get_by_role("heading", name=f"Result: {name}")


def screenshot_all(pages: list[Page], stem: str) -> None:
    for number, page in enumerate(pages):
        page.screenshot(path=str(ARTIFACTS / f"{stem}-{number}.png"))


def test_two_sessions_prune_at_once_and_each_sees_its_own_run(tmp_path: Path) -> None:
    model_spec, data_spec = prepared_tiny_setup(tmp_path / "setup")
    home = os.environ["HEADSCOPE_HOME"]
    log = tmp_path / "streamlit.log"
    with (
        streamlit_server(log, HEADSCOPE_HOME=home) as url,
        chromium_contexts(2) as (pages, requested, errors),
    ):
        first, second = pages
        try:
            for page in pages:
                page.goto(url)
                choose_model_and_data(page, str(model_spec.path), Path(str(data_spec.path)))
            # The first job fine-tunes after pruning, so it is still running when the second
            # job arrives (~0.25 s a step on a tiny model).
            fill_prune_form(first, name="alpha", seed=1, recovery_steps=40)
            fill_prune_form(second, name="beta", seed=2, recovery_steps=0)
            first.get_by_role("button", name="Run", exact=True).click()
            expect(first.get_by_test_id("stProgress").first).to_be_visible(timeout=LONG)
            second.get_by_role("button", name="Run", exact=True).click()
            queued = second.get_by_text("beta: queued, position 1", exact=False)
            expect(queued).to_be_visible(timeout=LONG)
            assert result_heading(first, "alpha").count() == 0  # alpha still runs
            expect(result_heading(first, "alpha")).to_be_visible(timeout=LONG)
            expect(result_heading(second, "beta")).to_be_visible(timeout=LONG)
            expect(queued).to_have_count(0, timeout=LONG)
            for page, own, other in ((first, "alpha", "beta"), (second, "beta", "alpha")):
                heads_kept = page.get_by_test_id("stMetric").filter(has_text="Heads kept")
                expect(heads_kept).to_contain_text("4 / 8", timeout=LONG)
                expect(page.get_by_test_id("stPlotlyChart")).to_have_count(1, timeout=LONG)
                wait_idle(page)
                assert result_heading(page, other).count() == 0, f"{own}'s page shows {other}"
                assert_no_error(page)
        except Exception:
            screenshot_all(pages, "concurrent-prune-failure")
            raise
    summaries, problems = RunStore().list()
    assert not problems
    assert sorted((s.name, s.method, s.seed) for s in summaries) == [
        ("alpha", "random", 1),
        ("beta", "random", 2),
    ]
    assert not errors and not external_requests(requested)
    assert "Traceback" not in log.read_text()


def test_twenty_sessions_load_a_stored_run_at_once(tmp_path: Path) -> None:
    from pruning.pipeline import RunRequest, run_pruning

    model_spec, data_spec = prepared_tiny_setup(tmp_path / "setup")
    stored = run_pruning(
        RunRequest(
            method="random",
            config={"sparsity": 0.5},
            model=model_spec,
            data=data_spec,
            score_examples=16,
            name="Shared run",
            device="cpu",
        )
    )
    home = os.environ["HEADSCOPE_HOME"]
    log = tmp_path / "streamlit.log"
    with (
        streamlit_server(log, HEADSCOPE_HOME=home) as url,
        chromium_contexts(LOADS) as (pages, requested, errors),
    ):
        try:
            with ThreadPoolExecutor(LOADS) as pool:
                answers = list(pool.map(lambda _: requests.get(f"{url}/runs", timeout=60), pages))
            assert [answer.status_code for answer in answers] == [200] * LOADS
            # All twenty navigations start before any is waited for: the sessions run at once.
            for page in pages:
                page.goto(f"{url}/runs", wait_until="commit", timeout=LOAD_TIMEOUT)
            for page in pages:
                table = page.get_by_test_id("stDataFrame")
                expect(table).to_contain_text("Shared run", timeout=LOAD_TIMEOUT)
                expect(table).to_contain_text(stored.key, timeout=LOAD_TIMEOUT)
            # Selecting the run draws its heatmap: a second wave of script runs at once (on a
            # quarter of the sessions, to keep the test's time modest on two cores).
            selecting = pages[: LOADS // 4]
            for page in selecting:
                wait_idle(page)
                toggle_row(page, 0)
            for page in selecting:
                chart = page.get_by_test_id("stPlotlyChart")
                expect(chart).to_have_count(1, timeout=LONG)
                expect(chart.locator(".main-svg").first).to_be_visible(timeout=LONG)
                expect(page.get_by_role("button", name="Build export")).to_be_visible(timeout=LONG)
            for page in pages:
                assert_no_error(page)
        except Exception:
            screenshot_all(pages[:3], "concurrent-runs-failure")
            raise
    assert not errors and not external_requests(requested)
    assert "Traceback" not in log.read_text()
    assert [s.key for s in RunStore().list()[0]] == [stored.key]
