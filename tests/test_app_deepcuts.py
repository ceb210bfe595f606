"""App tests of the DeepCuts page: form, stored-run results, IoU views, a real tiny run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cache.model_store import ModelStore, PreparedModel
from cache.run_store import RunRecord, RunStore
from conftest import prepared_tiny_setup
from pruning.methods.base import REGISTRY

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/deepcuts.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


def _deepcuts_registered() -> None:
    """Register the method even where pruning.methods does not import it (yet)."""
    pytest.importorskip("pruning.methods.deepcuts")


def _open(tmp_path: Path | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tmp_path is not None:
        model, data = prepared_tiny_setup(tmp_path / "setup")
        app.session_state["model_spec"] = model
        app.session_state["data_spec"] = data
    return app.run().switch_page(PAGE).run()


def _charts(app: AppTest) -> list[str]:
    """Each chart's title and trace names (the JSON spec escapes non-ASCII text)."""
    texts = []
    for chart in app.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        names = [str(trace.get("name", trace.get("header", ""))) for trace in spec["data"]]
        texts.append(" | ".join([spec["layout"].get("title", {}).get("text", ""), *names]))
    return texts


def _synthetic_run(
    prepared: PreparedModel,
    strategy: str,
    ratio: float,
    seed: int,
    definition: str = "prunable",
) -> RunRecord:
    """A DeepCuts-like run on the prepared tiny model: random masks of its encoder weights.

    Runs with a ``definition`` other than "prunable" carry the method info of issue #27 (keep
    share, whole-model and BERT-base ratios); prunable ones look like runs stored before it.
    """
    from pruning.compression import bert_base_equivalent_ratio, bert_base_keep_share
    from pruning.weight_masks import head_density

    model = prepared.load(device="cpu").model
    generator = torch.Generator().manual_seed(seed)
    share = 1 / ratio if definition == "prunable" else bert_base_keep_share(ratio)
    masks = {
        name: torch.rand(p.shape, generator=generator) < share
        for name, p in model.named_parameters()
        if ".encoder.layer." in name and name.endswith(".weight") and p.ndim == 2
    }
    density = head_density(model, masks)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    fingerprint = f"prepared:{prepared.key}"
    config: dict[str, object] = {"strategy": strategy, "compression_ratio": ratio}
    info: dict[str, object] = {"strategy": strategy, "achieved_ratio": total / kept}
    if definition != "prunable":
        config["ratio_definition"] = definition
        info.update(
            keep_share=kept / total,
            whole_model_ratio=1.2,
            bert_base_ratio=bert_base_equivalent_ratio(kept / total),
        )
    return RunRecord(
        key=RunStore.key_for(
            model_fingerprint=fingerprint,
            data_fingerprint="data",
            method="deepcuts",
            config=config,
            seed=seed,
        ),
        method="deepcuts",
        config=config,
        seed=seed,
        model={"spec": {}, "fingerprint": fingerprint, "prepared_key": prepared.key},
        data={"spec": {}, "fingerprint": "data", "label_names": ["negative", "positive"]},
        metrics={
            "dense": {"accuracy": 0.9},
            "pruned": {"accuracy": 0.8 - 0.1 * seed},
            "cost": {
                "params_dense": 100_000,
                "params_nonzero": 90_000,
                "dense_bytes": 400_000,
                "sparse_bytes": 720_000,
            },
        },
        trace=[],
        info={
            "name": f"DeepCuts · {strategy} · {ratio:g}×",
            "method_info": info,
            "settings": {"eval_examples": None},
        },
        mask=density > 0,
        scores=density,
        extra_tensors=masks,
    )


def test_without_a_prepared_classifier_the_page_warns_and_shows_no_form() -> None:
    app = _open()
    assert not app.exception
    assert "DeepCuts" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.multiselect


def test_without_the_method_the_page_says_so_and_shows_no_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deepcuts_registered()
    monkeypatch.delitem(REGISTRY, "deepcuts")
    app = _open(tmp_path)
    assert not app.exception
    assert any("DeepCuts method is not available" in e.value for e in app.error)
    assert not app.multiselect
    assert any("No DeepCuts run stored" in i.value for i in app.info)


def test_stored_runs_show_curves_table_density_cost_and_iou(tmp_path: Path) -> None:
    _deepcuts_registered()
    pytest.importorskip("pruning.weight_masks")
    app = AppTest.from_file(APP, default_timeout=120)
    model, data = prepared_tiny_setup(tmp_path / "setup")
    (prepared,) = ModelStore().list()
    for seed, strategy in enumerate(("cam_cut", "smooth_cut")):
        RunStore().save(_synthetic_run(prepared, strategy, 3.0, seed))
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = app.run().switch_page(PAGE).run()
    assert not app.exception
    assert not app.error

    labels = [m.label for m in app.multiselect]
    assert labels == ["Strategies", "Compression ratios"]
    assert app.multiselect[0].value == ["cam_cut", "smooth_cut", "layer_mag_weight"]
    assert app.multiselect[1].value == [3.0]
    table = app.dataframe[0].value
    assert sorted(table["strategy"]) == ["cam_cut", "smooth_cut"]
    assert set(table["sparse MB"]) == {0.72}

    charts = _charts(app)
    # Ratio curves, density map, cost table, per-head IoU, per-layer IoU.
    assert len(charts) == 5
    assert "Accuracy against compression ratio" in charts[0] and "dense (0.9000)" in charts[0]
    assert "Weight density per head" in charts[1]
    assert "Sparse CSR (MB)" in charts[2]
    assert "Weight-mask IoU per head" in charts[3]
    assert "Weight-mask IoU per layer" in charts[4]
    assert {m.label for m in app.metric} >= {
        "Non-zero weights",
        "Sparse size (CSR)",
        "IoU of the pruned weights over all masked weights",
    }
    # Runs stored before issue #27 get both ratio definitions from their cost and ratio.
    assert set(table["definition"]) == {"prunable"}
    assert list(table["whole-model ratio"]) == [100_000 / 90_000] * 2
    assert all(2.0 < r < 2.2 for r in table["BERT-base ratio"])  # prunable 3 ~ the paper's 2.1
    assert any("no dense speed-up" in i.value for i in app.info)

    app.radio[0].set_value("All strategies at one ratio").run()
    assert not app.exception and not app.error
    charts = _charts(app)
    assert any("Mean IoU over heads at 3×" in c for c in charts)
    assert any("Minimum IoU over heads at 3×" in c for c in charts)
    assert any("IoU of pruned weights" in c or "Weight-mask IoU per layer" in c for c in charts)

    app.radio[0].set_value("The paper's Figure 9 (ratios 3 and 3.5)").run()
    assert not app.exception and not app.error
    assert any("Figure 9 needs two or more strategies" in i.value for i in app.info)


def test_figure_9_and_both_ratio_definitions_from_stored_runs(tmp_path: Path) -> None:
    _deepcuts_registered()
    app = AppTest.from_file(APP, default_timeout=120)
    model, data = prepared_tiny_setup(tmp_path / "setup")
    (prepared,) = ModelStore().list()
    seed = 0
    for ratio in (3.0, 3.5):
        for strategy in ("layer_mag_weight", "cam_cut", "smooth_cut"):
            run = _synthetic_run(prepared, strategy, ratio, seed, "bert_base_equivalent")
            RunStore().save(run)
            seed += 1
    RunStore().save(_synthetic_run(prepared, "cam_cut", 3.0, seed, "prunable"))
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = app.run().switch_page(PAGE).run()
    assert not app.exception and not app.error
    assert "Ratio definition" in [s.label for s in app.selectbox]
    table = app.dataframe[0].value
    paper = table[table["definition"] == "bert_base_equivalent"]
    assert len(paper) == 6
    for ratio, value in zip(paper["ratio"], paper["BERT-base ratio"], strict=True):
        assert value == pytest.approx(ratio, rel=0.1)
    definitions = next(r for r in app.radio if r.label == "Ratio definition of the curves")
    assert len(definitions.options) == 2  # one curve chart per definition, never mixed
    definitions.set_value("bert_base_equivalent").run()
    assert not app.exception and not app.error
    curves = _charts(app)[0]
    assert "Accuracy against compression ratio" in curves
    assert "Smooth-Cut (SmoothGrad)" in curves

    next(r for r in app.radio if r.label == "Compare").set_value(
        "The paper's Figure 9 (ratios 3 and 3.5)"
    ).run()
    assert not app.exception and not app.error
    charts = _charts(app)
    (figure,) = [c for c in charts if "the paper's Figure 9" in c]
    assert "IoU of the pruned weights across layers" in figure
    for ratio in ("3×", "3.5×"):
        assert f"mean IoU at {ratio}" in figure and f"min IoU at {ratio}" in figure
    next(r for r in app.radio if r.label == "IoU of").set_value("kept").run()
    assert not app.exception and not app.error
    assert any("IoU of the kept weights across layers" in c for c in _charts(app))


def test_a_real_tiny_run_is_submitted_stored_and_shown(tmp_path: Path) -> None:
    _deepcuts_registered()
    app = _open(tmp_path)
    assert not app.exception
    app.multiselect[0].set_value(["layer_mag_weight"])  # no gradients: the quickest strategy
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception and not app.error
    deadline = time.monotonic() + 90
    while not RunStore().list()[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    (summary,) = RunStore().list()[0]
    record = RunStore().get(summary.key)
    assert record.config["strategy"] == "layer_mag_weight" and record.extra_tensors
    app = app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    assert list(app.dataframe[0].value["strategy"]) == ["layer_mag_weight"]
    assert any("Weight density per head" in c for c in _charts(app))

    next(b for b in app.button if b.label == "Measure latency").click().run()
    deadline = time.monotonic() + 60
    while not any("Masked latency" in c for c in _charts(app)) and time.monotonic() < deadline:
        time.sleep(0.5)
        app.run()
    assert not app.exception and not app.error
    assert any("Masked latency" in c for c in _charts(app))


def test_a_whole_model_ratio_the_classifier_cannot_reach_is_refused_in_the_form(
    tmp_path: Path,
) -> None:
    _deepcuts_registered()
    app = _open(tmp_path)
    next(s for s in app.selectbox if s.label == "Ratio definition").set_value("whole_model")
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception
    assert any("cannot be reached" in e.value and "Nothing was started" in e.value
               for e in app.error)  # fmt: skip
    assert RunStore().list()[0] == []
