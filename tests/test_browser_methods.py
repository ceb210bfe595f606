"""Browser test of the Gates and DeepCuts pages on a tiny model: run from the page, replay,
compare, and no request leaves 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from browser_support import ARTIFACTS, chromium_page, external_requests, streamlit_server
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from test_browser_flow import LONG, assert_no_error, choose_model_and_data, go_to, snap, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_gates_and_deepcuts_pages_run_and_show_their_results(tmp_path: Path) -> None:
    model_spec, data_spec = prepared_tiny_setup(tmp_path / "setup")
    home = os.environ["HEADSCOPE_HOME"]
    with (
        streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=home) as url,
        chromium_page() as (page, requests),
    ):
        try:
            page.goto(url)
            choose_model_and_data(page, str(model_spec.path), Path(str(data_spec.path)))

            go_to(page, "Gates")
            expect(page.get_by_text("No gate run stored yet")).to_be_visible(timeout=LONG)
            page.get_by_text("Run both (STE and L0, same settings)").click()
            wait_idle(page)
            page.get_by_role("spinbutton", name="Training steps").fill("6")
            page.get_by_role("spinbutton", name="Snapshot every").fill("2")
            page.get_by_role("button", name="Run both").click()
            # Both runs finish and the newest is replayed: heatmap, open map, curves.
            expect(page.get_by_test_id("stMetric").filter(has_text="Heads removed")).to_be_visible(
                timeout=LONG
            )
            expect(page.get_by_text("Compare gate runs")).to_be_visible(timeout=LONG)
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=LONG)
            assert page.get_by_test_id("stPlotlyChart").count() >= 3
            assert_no_error(page)
            snap(page, "gates-tiny.png")

            go_to(page, "DeepCuts")
            expect(page.get_by_text("No DeepCuts run stored")).to_be_visible(timeout=LONG)
            page.get_by_role("button", name="Run").click()
            expect(page.get_by_text("One run: density and honest size")).to_be_visible(timeout=LONG)
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=LONG)
            expect(page.get_by_text("no dense speed-up", exact=False)).to_be_visible(timeout=LONG)
            # The three default strategies run one after the other; the table fills in.
            expect(page.get_by_test_id("stDataFrame").first).to_contain_text(
                "smooth_cut", timeout=LONG
            )
            expect(page.get_by_test_id("stDataFrame").first).to_contain_text(
                "layer_mag_weight", timeout=LONG
            )
            assert_no_error(page)
            snap(page, "deepcuts-tiny.png")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "methods-failure.png"))
            raise
    methods = sorted(summary.method for summary in RunStore().list()[0])
    assert methods == ["autoattention", "deepcuts", "deepcuts", "deepcuts", "l0_gates"]
    assert not external_requests(requests)


def test_mcap_and_explanations_pages_show_stored_runs_and_escape_user_text(
    tmp_path: Path,
) -> None:
    from pruning.pipeline import RunRequest, run_pruning

    model_spec, data_spec = prepared_tiny_setup(tmp_path / "setup")
    common = {"model": model_spec, "data": data_spec, "score_examples": 16, "device": "cpu"}
    mcap = {"sparsity": 0.25, "episode_size": 10, "max_train_examples": 30, "update_every": 2}
    run_pruning(RunRequest(method="mcap", config=mcap, protocol="before", name="MCAP", **common))
    run_pruning(
        RunRequest(
            method="random", config={"sparsity": 0.25}, protocol="before", name="Random", **common
        )
    )
    home = os.environ["HEADSCOPE_HOME"]
    with (
        streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=home) as url,
        chromium_page() as (page, requests),
    ):
        try:
            page.goto(url)
            choose_model_and_data(page, str(model_spec.path), Path(str(data_spec.path)))

            go_to(page, "MCAP")
            expect(page.get_by_text("Replay a stored MCAP run")).to_be_visible(timeout=LONG)
            expect(page.get_by_text("Table I: pruned before fine-tuning")).to_be_visible(
                timeout=LONG
            )
            expect(page.get_by_test_id("stDataFrame").first).to_contain_text(
                "Unpruned", timeout=LONG
            )
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=LONG)
            assert page.get_by_test_id("stPlotlyChart").count() >= 3
            assert_no_error(page)
            snap(page, "mcap-tiny.png")

            go_to(page, "Explanations")
            box = page.get_by_role("textbox", name="One sentence per line")
            expect(box).to_be_visible(timeout=LONG)
            box.fill("<script>window.__xss = 1</script> a wonderful film")
            page.get_by_role("spinbutton", name="LIME samples").fill("40")
            page.get_by_role("button", name="Explain").click()
            # The user's markup comes back as words on the page, never as a running script.
            expect(page.get_by_text("window.__xss", exact=False).first).to_be_visible(timeout=LONG)
            expect(page.get_by_text("Table II/III", exact=False).first).to_be_visible(timeout=LONG)
            assert page.evaluate("window.__xss") is None
            assert_no_error(page)
            snap(page, "explanations-tiny.png")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "mcap-explanations-failure.png"))
            raise
    assert not external_requests(requests)
