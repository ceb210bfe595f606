"""`headscope bench speed`: dense vs heads-removed latency, FLOPs prediction, A* and LIME ratios."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import pruning.bench_speed as bench_speed_module
from conftest import build_tiny_model, prepared_tiny_setup, save_small_bert, sentiment_rows
from pruning.bench_speed import (
    PRECISIONS_CUDA,
    SpeedBenchOptions,
    astar_engine_ratio,
    check_plan_for_model,
    head_removal_mask,
    headline,
    heads_removed_per_layer,
    latency_table,
    random_model_config,
    resolve_plan,
)
from pruning.cli_bench_speed import add_speed_bench, bench_speed, markdown_report
from pruning.cost import flops_per_example
from pruning.heads import heads_per_layer, remove_heads


def _args(argv: list[str]) -> argparse.Namespace:
    """Parse ``bench speed`` flags the way ``headscope bench`` does (``bench`` holds the kind)."""
    parser = argparse.ArgumentParser(prog="headscope bench")
    add_speed_bench(parser.add_subparsers(dest="bench", required=True))
    return parser.parse_args(["speed", *argv])


def _plan(**changes: Any) -> Any:
    options = SpeedBenchOptions(
        sparsities=(0.25, 0.5), batch_sizes=(1, 2), seq_lens=(8, 16), repeats=3, warmup=0
    )
    return resolve_plan(replace(options, **changes))


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    return ["--model", str(model.path), "--data", str(data.path), "--device", "cpu",
            "--no-progress"]  # fmt: skip


def test_the_same_number_of_heads_goes_in_every_layer_seeded() -> None:
    for sparsity, removed in ((0.25, 3), (0.5, 6), (0.75, 9)):
        mask = head_removal_mask(6, 12, sparsity, seed=0)
        assert mask.dtype == torch.bool and tuple(mask.shape) == (6, 12)
        assert (~mask).sum(dim=1).tolist() == [removed] * 6  # False = removed
    mask = head_removal_mask(6, 12, 0.5, seed=0)
    assert torch.equal(mask, head_removal_mask(6, 12, 0.5, seed=0))
    assert not torch.equal(mask, head_removal_mask(6, 12, 0.5, seed=1))
    assert len({tuple(row.tolist()) for row in mask}) > 1  # each layer draws its own heads
    assert heads_removed_per_layer(3, 0.5) == 2  # half up, not banker's rounding
    assert heads_removed_per_layer(4, 0.5) == 2
    with pytest.raises(ValueError, match="removes 0 of the 4 heads"):
        heads_removed_per_layer(4, 0.1)
    with pytest.raises(ValueError, match="removes 4 of the 4 heads"):
        heads_removed_per_layer(4, 0.9)


def test_quick_and_full_plans() -> None:
    quick = resolve_plan(SpeedBenchOptions(quick=True))
    assert quick.sparsities == (0.5,) and quick.batch_sizes == (1, 8) and quick.seq_lens == (32,)
    assert quick.repeats <= 5 and quick.astar_iterations == 1 and quick.astar_examples == 32
    assert quick.lime_samples == 100 and quick.quick
    full = resolve_plan(SpeedBenchOptions())
    assert full.sparsities == (0.25, 0.5, 0.75) and full.batch_sizes == (1, 8, 32)
    assert full.seq_lens == (32, 128) and full.astar_iterations == 2 and full.lime_samples == 1000
    mixed = resolve_plan(SpeedBenchOptions(quick=True, seq_lens=(16,), skip_astar=True))
    assert mixed.seq_lens == (16,) and mixed.batch_sizes == (1, 8) and not mixed.astar


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sparsities": (0.5, 1.0)}, "strictly between 0 and 1"),
        ({"sparsities": (0.0,)}, "strictly between 0 and 1"),
        ({"sparsities": ()}, "--sparsities needs at least one value"),
        ({"sparsities": (0.5, 0.5)}, "lists a value twice"),
        ({"batch_sizes": (0, 8)}, "--batch-sizes: each batch size must be >= 1"),
        ({"seq_lens": (0,)}, "--seq-lens: each sequence length must be >= 1"),
        ({"repeats": 0}, "--repeats must be at least 1"),
        ({"warmup": -1}, "--warmup must be at least 0"),
        ({"astar_iterations": 0}, "--astar-iterations must be at least 1"),
        ({"lime_samples": 5}, "--lime-samples must be at least 10"),
        ({"astar_budget": -1.0}, "--astar-budget must be a finite number >= 0"),
        ({"random_config": "gpt"}, "--random-config must be one of minilm, bert-base"),
        ({"random_config": "minilm", "prepared": "abc"}, "leave out --model and --prepared"),
    ],
)
def test_bad_options_are_refused_with_one_clear_message(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_plan(replace(SpeedBenchOptions(), **changes))


def test_the_model_limits_sequence_lengths_and_sparsities() -> None:
    model = build_tiny_model("bert", layers=2, heads=4)  # 64 positions
    check_plan_for_model(_plan(seq_lens=(8, 64)), model)
    with pytest.raises(ValueError, match="100 tokens is above the model's maximum of 64"):
        check_plan_for_model(_plan(seq_lens=(8, 100)), model)
    with pytest.raises(ValueError, match="both remove 2 of the 4 heads"):
        check_plan_for_model(_plan(sparsities=(0.5, 0.55)), model)
    with pytest.raises(ValueError, match="removes 0 of the 4 heads"):
        check_plan_for_model(_plan(sparsities=(0.1,)), model)
    pruned = remove_heads(model, head_removal_mask(2, 4, 0.5))
    with pytest.raises(ValueError, match="already has heads removed"):
        check_plan_for_model(_plan(), pruned)


def test_latency_table_rows_match_the_flops_prediction_of_cost() -> None:
    model = build_tiny_model("bert", layers=3, heads=4)
    plan = _plan()
    rows = latency_table(model, plan)
    assert [(r["sparsity"], r["batch_size"], r["seq_len"]) for r in rows] == [
        (s, b, n) for s in (0.25, 0.5) for b in (1, 2) for n in (8, 16)
    ]
    for row in rows:
        assert row["precision"] == "fp32" and row["device"] == "cpu"
        assert row["heads_removed_per_layer"] == {0.25: 1, 0.5: 2}[row["sparsity"]]
        assert row["dense_ms"] > 0 and row["pruned_ms"] > 0
        assert row["speedup"] == pytest.approx(row["dense_ms"] / row["pruned_ms"])
        # Elementwise dense_i >= min * pruned_i bounds the ratio of medians the same way.
        assert row["speedup_min"] <= row["speedup"] <= row["speedup_max"]
        assert row["speedup_min"] <= row["speedup_p25"] <= row["speedup_p75"]
        assert len(row["dense_latency"]["times_ms"]) == plan.repeats
        pruned = remove_heads(model, head_removal_mask(3, 4, row["sparsity"], plan.seed))
        expected = flops_per_example(model, row["seq_len"]) / flops_per_example(
            pruned, row["seq_len"]
        )
        assert row["predicted_speedup"] == pytest.approx(expected, rel=1e-12)
        assert row["predicted_speedup"] > 1.0
        assert row["measured_over_predicted"] == pytest.approx(
            row["speedup"] / row["predicted_speedup"]
        )
    # One dense measurement per shape, shared by every sparsity timed in the same rounds.
    by_shape: dict[tuple[int, int], list[list[float]]] = {}
    for row in rows:
        key = (row["batch_size"], row["seq_len"])
        by_shape.setdefault(key, []).append(row["dense_latency"]["times_ms"])
    assert all(times[0] == other for times in by_shape.values() for other in times[1:])


def test_every_model_is_timed_in_the_same_interleaved_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    real = bench_speed_module.interleaved_latency

    def spy(models: Any, **kwargs: Any) -> Any:
        calls.append({"heads": [heads_per_layer(m) for m in models], **kwargs})
        return real(models, **kwargs)

    monkeypatch.setattr(bench_speed_module, "interleaved_latency", spy)
    model = build_tiny_model("bert", layers=3, heads=4)
    latency_table(model, _plan(sparsities=(0.25, 0.5, 0.75)))
    assert len(calls) == 4  # 2 batch sizes x 2 lengths, each one interleaved call
    for call in calls:
        assert call["heads"] == [[4, 4, 4], [3, 3, 3], [2, 2, 2], [1, 1, 1]]
        assert call["repeats"] == 3
    assert {(c["batch_size"], c["seq_len"]) for c in calls} == {(1, 8), (1, 16), (2, 8), (2, 16)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rows_in_fp32_and_bf16_autocast() -> None:
    model = build_tiny_model("bert", layers=3, heads=4).to("cuda")
    rows = latency_table(model, _plan(), precisions=PRECISIONS_CUDA)
    assert [r["precision"] for r in rows] == ["fp32"] * 8 + ["bf16-autocast"] * 8
    assert all(r["device"].startswith("cuda") and r["dense_ms"] > 0 for r in rows)


def _row(speedup: float, predicted: float, **shape: Any) -> dict[str, Any]:
    base = {"device": "cpu", "precision": "fp32", "sparsity": 0.5, "batch_size": 32,
            "seq_len": 128}  # fmt: skip
    return {**base, **shape, "speedup": speedup, "speedup_min": speedup - 0.1,
            "speedup_max": speedup + 0.1, "predicted_speedup": predicted}  # fmt: skip


def test_headline_is_within_25_percent_of_the_prediction_or_not() -> None:
    other = _row(9.0, 1.2, batch_size=8)
    good = headline([other, _row(1.1, 1.2)])
    assert good["measured"] == 1.1 and good["predicted"] == 1.2
    assert good["within_25_percent"] is True
    assert headline([_row(1.6, 1.2)])["within_25_percent"] is False
    assert headline([_row(0.89, 1.2)])["within_25_percent"] is False  # 26% below
    assert headline([_row(1.2, 1.2, device="cuda:0")])["measured"] is None
    missing = headline([other])
    assert missing["measured"] is None and missing["within_25_percent"] is None
    assert "32 among --batch-sizes" in missing["note"]


def test_astar_engines_run_the_same_bounded_prefix() -> None:
    from conftest import real_tokenizer, small_bert

    rows = sentiment_rows(24)
    texts = [text for text, _ in rows]
    labels = [int(label == "positive") for _, label in rows]
    model, tokenizer = small_bert(), real_tokenizer()
    one = astar_engine_ratio(model, tokenizer, texts, labels, iterations=1, budget=100.0)
    for engine in ("fast", "naive"):
        assert one[engine]["iterations"] == 1
        assert one[engine]["evaluations"] == 1 + 2 * 4  # the baseline, then every head
        assert one[engine]["evaluations_per_second"] > 0
    assert one["identical_trace"] is True and one["ratio"] > 0
    two = astar_engine_ratio(model, tokenizer, texts, labels, iterations=2, budget=100.0)
    assert two["fast"]["iterations"] == two["naive"]["iterations"] == 2
    assert two["fast"]["evaluations"] == two["naive"]["evaluations"] > 9
    assert two["identical_trace"] is True


def test_quick_bench_writes_complete_json_and_markdown(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, table = tmp_path / "speed.json", tmp_path / "speed.md"
    args = _args([*tiny, "--quick", "--repeats", "2", "--lime-samples", "20",
                  "--out", str(out), "--markdown", str(table)])  # fmt: skip
    assert bench_speed(args) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    markdown = table.read_text()
    assert markdown == printed
    assert report["bench"] == "speed" and report["command"].startswith("headscope bench speed")
    assert {"date", "machine", "versions", "environment", "architecture"} <= set(report)
    assert report["model_source"] == "prepared" and report["plan"]["quick"] is True
    assert [(r["batch_size"], r["seq_len"]) for r in report["latency"]] == [(1, 32), (8, 32)]
    assert report["headline"]["measured"] is None  # quick mode has no batch 32 x 128
    astar = report["astar"]
    assert astar["examples"] == 12  # the validation split of the 120-row CSV
    assert astar["fast"]["iterations"] == astar["naive"]["iterations"] == 1
    assert astar["identical_trace"] is True and astar["ratio"] > 0
    lime = report["explain"]
    assert lime["samples"] == 20 and lime["ratio"] > 0
    assert lime["max_abs_value_difference"] < 1e-4
    assert markdown.count("| fp32 | 50% (2/4 per layer) |") == 2
    assert "Headline (50% of heads removed" in markdown and "not measured" in markdown
    assert "Fast engine / naive:" in markdown and "traces identical" in markdown
    assert "Batching speed-up:" in markdown


def test_headline_shape_and_json_output(
    tiny: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args([*tiny, "--sparsities", "0.5", "--batch-sizes", "32", "--seq-lens", "128",
                  "--repeats", "1", "--warmup", "0", "--skip-astar", "--skip-explain",
                  "--json"])  # fmt: skip
    assert bench_speed(args) == 0
    report = json.loads(capsys.readouterr().out)
    head = report["headline"]
    assert head["measured"] == pytest.approx(report["latency"][0]["speedup"])
    assert head["predicted"] == pytest.approx(report["latency"][0]["predicted_speedup"])
    assert isinstance(head["within_25_percent"], bool)
    assert report["astar"] is None and report["explain"] is None
    sentence = markdown_report(report).strip().splitlines()[-1]
    assert sentence.startswith("Headline (50% of heads removed, CPU fp32, batch 32, 128 tokens)")
    assert "within 25% of the prediction" in sentence


def test_fresh_head_when_nothing_is_prepared_and_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_small_bert(tmp_path / "fresh")
    _, data = prepared_tiny_setup(tmp_path / "setup")
    where = ["--model", str(folder), "--data", str(data.path), "--device", "cpu", "--no-progress",
             "--skip-astar", "--skip-explain"]  # fmt: skip
    quick = ["--sparsities", "0.5", "--batch-sizes", "1", "--seq-lens", "8", "--repeats", "1"]
    assert bench_speed(_args([*where, *quick, "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["model_source"] == "fresh-head"
    with pytest.raises(ValueError, match="200 tokens is above the model's maximum of 128"):
        bench_speed(_args([*where, "--seq-lens", "8,200"]))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        bench_speed(_args([*where, "--sparsities", "1.5"]))
    with pytest.raises(ValueError, match="--batch-sizes: each batch size must be >= 1"):
        bench_speed(_args([*where, "--batch-sizes", "0"]))
    with pytest.raises(SystemExit):
        _args(["--batch-sizes", "one"])
    assert "expected comma-separated whole numbers" in capsys.readouterr().err


def test_random_configs_need_no_download(capsys: pytest.CaptureFixture[str]) -> None:
    base = random_model_config("bert-base", ("rotten", "fresh"))
    assert (base.num_hidden_layers, base.num_attention_heads, base.hidden_size) == (12, 12, 768)
    assert base.intermediate_size == 3072 and base.id2label == {0: "rotten", 1: "fresh"}
    minilm = random_model_config("minilm")
    assert (minilm.num_hidden_layers, minilm.num_attention_heads, minilm.hidden_size) == (
        6,
        12,
        384,
    )
    args = _args(["--random-config", "minilm", "--sparsities", "0.5", "--batch-sizes", "1",
                  "--seq-lens", "8", "--repeats", "1", "--warmup", "0", "--skip-astar",
                  "--skip-explain", "--device", "cpu", "--no-progress", "--json"])  # fmt: skip
    assert bench_speed(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_source"] == "random"
    assert report["architecture"]["layers"] == 6 and report["architecture"]["heads"] == 12
    assert report["latency"][0]["heads_removed_per_layer"] == 6
