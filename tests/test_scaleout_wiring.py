"""The executor setting reaches every entry point: CLI flags, sweeps, bench quality, dashboard."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.cli import main
from pruning.cli_common import build_parser, executor_from_args
from pruning.cli_runs import prune_requests
from pruning.executors import LOCAL, ExecutorSettings

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _prune_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["prune", "--method", "random", *flags])


def test_sparsity_and_seed_lists_make_one_request_per_pair() -> None:
    requests = prune_requests(
        _prune_args("--sparsity", "0.3,0.5", "--seeds", "0,1,1", "--name", "s")
    )
    assert [(r.config["sparsity"], r.seed) for r in requests] == [
        (0.3, 0),
        (0.3, 1),
        (0.5, 0),
        (0.5, 1),
    ]
    assert [r.name for r in requests] == [
        "s 0.3 seed 0",
        "s 0.3 seed 1",
        "s 0.5 seed 0",
        "s 0.5 seed 1",
    ]
    single = prune_requests(_prune_args("--sparsity", "0.5", "--seed", "3", "--name", "one"))
    assert [(r.config["sparsity"], r.seed, r.name) for r in single] == [(0.5, 3, "one")]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--seeds", "0,x"), "--seeds '0,x': give whole numbers separated by commas."),
        (("--sparsity", "0.5,,"), None),
        (("--sparsity", ","), "--sparsity is empty"),
        (("--sparsity", "1.5"), "sparsity"),
    ],
)
def test_bad_lists_are_refused_before_any_work(flags: tuple[str, ...], message: str | None) -> None:
    if message is None:
        assert len(prune_requests(_prune_args(*flags))) == 1
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prune_requests(_prune_args(*flags))


def test_executor_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSCOPE_EXECUTOR", raising=False)
    assert executor_from_args(_prune_args()) == LOCAL
    monkeypatch.setenv("HEADSCOPE_EXECUTOR", "ray")
    monkeypatch.setenv("HEADSCOPE_RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.setenv("HEADSCOPE_RAY_WORKERS", "3")
    assert executor_from_args(_prune_args()) == ExecutorSettings("ray", "10.0.0.5:6379", 3)
    chosen = executor_from_args(
        _prune_args("--executor", "local", "--ray-address", "local", "--ray-workers", "2")
    )
    assert chosen == ExecutorSettings("local", "local", 2)
    with pytest.raises(ValueError, match="is not 'auto', 'local'"):
        executor_from_args(_prune_args("--executor", "ray", "--ray-address", "no port"))


def test_bench_quality_records_the_executor_in_its_command() -> None:
    from pruning.bench_quality import QualityOptions, quality_command
    from pruning.cli_bench_quality import options_from_args

    args = build_parser().parse_args(
        ["bench", "quality", "--quick", "--executor", "ray", "--ray-address", "local"]
    )
    options = options_from_args(args)
    assert options.executor == ExecutorSettings("ray", "local")
    assert quality_command(options).endswith("--executor ray --ray-address local")
    assert "--executor" not in quality_command(QualityOptions(quick=True))


def test_cli_sweep_stores_one_run_per_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    flags = ["--model", model.path, "--data", data.path, "--score-examples", "16"]
    command = ["prune", "--method", "random", "--sparsity", "0.25", "--seeds", "0,1"]
    code = main([*command, *flags, "--json", "--no-progress", "--executor", "local"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 2 and len({row["key"] for row in printed}) == 2
    stored = {s.key: s for s in RunStore().list()[0]}
    assert set(stored) == {row["key"] for row in printed}
    masks = [RunStore().get(row["key"]).mask for row in printed]
    assert all(int((~mask).sum()) == 2 for mask in masks)  # 25% of 2 x 4 heads
    assert not bool((masks[0] == masks[1]).all())  # two seeds, two random masks


def _sidebar_toggle(app: AppTest) -> Any:
    return next(t for t in app.toggle if t.key == "executor-ray")


@pytest.mark.slow
def test_sidebar_executor_refuses_a_bad_address_and_keeps_local(
    no_autoprepare: None, server_navigation_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADSCOPE_EXECUTOR", raising=False)
    monkeypatch.setattr("pages.support.common.ray_installed", lambda: True)
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    assert app.session_state["executor_settings"] == LOCAL
    _sidebar_toggle(app).set_value(True).run()
    address = next(t for t in app.text_input if t.key == "executor-address")
    address.set_value("not an address").run()
    assert any("is not 'auto', 'local'" in e.value for e in app.error)
    assert app.session_state["executor_settings"] == LOCAL
    address = next(t for t in app.text_input if t.key == "executor-address")
    address.set_value("127.0.0.1:6379").run()
    assert not app.error
    assert app.session_state["executor_settings"] == ExecutorSettings("ray", "127.0.0.1:6379")


@pytest.mark.slow
def test_sidebar_says_how_to_install_ray_when_it_is_missing(
    no_autoprepare: None, server_navigation_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pages.support.common.ray_installed", lambda: False)
    app = AppTest.from_file(APP, default_timeout=120).run()
    _sidebar_toggle(app).set_value(True).run()
    assert any("pip install 'headscope[ray]'" in w.value for w in app.warning)
    assert app.session_state["executor_settings"] == LOCAL


@pytest.mark.slow
def test_prune_page_more_seeds_make_one_sweep_job(
    no_autoprepare: None, server_navigation_mode: None, tmp_path: Path
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = app.run().switch_page("pages/prune.py").run()
    app.selectbox[0].set_value("random").run()
    seeds = next(t for t in app.text_input if t.label == "More seeds (a sweep)")
    seeds.set_value("1, x")  # form values travel with the submit click
    app.button[0].click().run()
    assert any("'x' is not a seed" in e.value for e in app.error)
    assert not RunStore().list()[0]
    seeds = next(t for t in app.text_input if t.label == "More seeds (a sweep)")
    seeds.set_value("1, 2")
    app.button[0].click().run()
    assert not app.exception
    deadline = time.monotonic() + 90
    while len(RunStore().list()[0]) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    summaries = RunStore().list()[0]
    assert sorted(RunStore().get(s.key).seed for s in summaries) == [0, 1, 2]


@pytest.mark.slow
def test_prune_page_sweep_on_ray_stores_what_the_local_sweep_stores(
    no_autoprepare: None, server_navigation_mode: None, tmp_path: Path, ray_cluster: Any
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app.session_state["executor_settings"] = ray_cluster
    app = app.run().switch_page("pages/prune.py").run()
    app.selectbox[0].set_value("random").run()
    next(t for t in app.text_input if t.label == "More seeds (a sweep)").set_value("1")
    app.button[0].click().run()
    assert not app.exception and not app.error
    deadline = time.monotonic() + 120
    while len(RunStore().list()[0]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    on_ray = {s.key: RunStore().get(s.key) for s in RunStore().list()[0]}
    assert sorted(r.seed for r in on_ray.values()) == [0, 1]
    # The same two requests through the local executor give the same keys and masks.
    from pruning.pipeline import RunRequest
    from pruning.ray_sweep import run_requests

    config = next(iter(on_ray.values())).config
    requests = [
        RunRequest(method="random", config=config, model=model, data=data, seed=seed)
        for seed in (0, 1)
    ]
    local = run_requests(requests, store=RunStore(tmp_path / "local-runs"))
    assert {record.key for record in local} == set(on_ray)
    for record in local:
        assert bool((on_ray[record.key].mask == record.mask).all())
