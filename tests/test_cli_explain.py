"""`headscope explain` and `headscope bench explain` on a tiny prepared model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import prepared_tiny_setup
from pruning.cli import main


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A prepared tiny BERT with one random-pruning run, in its own HEADSCOPE_HOME."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("cli_explain_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    run = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data,
                   score_examples=8, eval_examples=8, device="cpu", name="half")
    )  # fmt: skip
    yield {"home": home, "model": str(model.path), "data": str(data.path), "run": run.key}
    patch.undo()


@pytest.fixture
def tiny(tiny_home: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tiny_home["home"]))
    return tiny_home


def _where(tiny: dict[str, object]) -> list[str]:
    return ["--model", str(tiny["model"]), "--data", str(tiny["data"]), "--device", "cpu"]


def test_explain_prints_words_for_the_original_and_a_run(
    tiny: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", "a terrible film, really boring", *_where(tiny), "--run", str(tiny["run"]),
            "--samples", "20", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for word in ("terrible", "film,", "boring"):
        assert word in out
    assert "original · LIME" in out and "original · SHAP" in out
    assert f"half · {str(tiny['run'])[:6]} · LIME" in out
    assert "original vs half" in out and "LIME vs SHAP" in out


def test_explain_json_with_a_target_and_faithfulness(
    tiny: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", "a lovely cast", *_where(tiny), "--method", "lime", "--samples", "20",
            "--target", "positive", "--faithfulness", "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    (attribution,) = report["attributions"]
    assert attribution["words"] == ["a", "lovely", "cast"] and len(attribution["values"]) == 3
    assert report["target_name"] == "positive" == attribution["label_names"][attribution["target"]]
    assert attribution["faithfulness"]["ks"] == [1, 2]
    assert report["agreement"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run", "0123456789abcdef"], "No stored run"),
        (["--no-original"], "nothing to explain"),
        (["--target", "sideways"], "not one of the classes"),
        (["--samples", "3"], "at least 10"),
    ],
)
def test_bad_input_exits_with_status_2(
    tiny: dict[str, object], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["explain", "a film", *_where(tiny), *extra]) == 2
    assert message in capsys.readouterr().err


def test_empty_text_exits_with_status_2(
    tiny: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "   ", *_where(tiny)]) == 2
    assert "type a sentence" in capsys.readouterr().err


def test_bench_explain_quick_writes_a_report(
    tiny: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, table = tmp_path / "explain.json", tmp_path / "explain.md"
    argv = ["bench", "explain", *_where(tiny), "--quick", "--runs", str(tiny["run"]),
            "--out", str(out), "--markdown", str(table), "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["bench"] == "explain" and report["quick"] is True
    assert {"platform", "cpu_count", "torch_threads"} <= set(report["machine"])
    assert {"torch", "lime", "shap"} <= set(report["versions"]) and report["command"]
    lime = report["lime"]
    assert len(lime["batched_seconds"]) == len(lime["one_at_a_time_seconds"]) == 1
    assert lime["ratio"] > 0 and lime["max_abs_value_difference"] < 1e-3
    assert report["shap"]["evals"] == 40 and report["shap"]["median"] > 0
    rows = report["faithfulness"]
    assert [(r["model"].split(" · ")[0], r["method"]) for r in rows] == [
        ("original", "lime"), ("original", "shap"), ("half", "lime"), ("half", "shap"),
    ]  # fmt: skip
    assert all(r["n_texts"] == 2 for r in rows)
    markdown = table.read_text()
    assert markdown == capsys.readouterr().out and "| speed-up from batching |" in markdown


def test_bench_explain_can_skip_the_timings(
    tiny: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "faith.json"
    argv = ["bench", "explain", *_where(tiny), "--quick", "--skip-timing", "--runs",
            str(tiny["run"]), "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["lime"] is None and report["shap"] is None and len(report["faithfulness"]) == 4
    markdown = capsys.readouterr().out
    assert "speed-up" not in markdown and "comprehensiveness" in markdown
    assert main(["bench", "explain", *_where(tiny), "--quick", "--skip-timing"]) == 2
    assert "leaves nothing to do" in capsys.readouterr().err
