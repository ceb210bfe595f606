"""`headscope embeddings` and `headscope bench embeddings` on a tiny prepared model."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import prepared_tiny_setup
from pruning.cli_common import one_line
from pruning.cli_embeddings import (
    add_embeddings_bench,
    add_embeddings_command,
    bench_embeddings,
    cmd_embeddings,
)

pytestmark = pytest.mark.slow


def run(argv: list[str]) -> int:
    """Parse and run like ``pruning.cli.main`` (input errors: status 2), whether or not the
    commands are wired into the ``headscope`` parser yet."""
    parser = argparse.ArgumentParser(prog="headscope")
    commands = parser.add_subparsers(dest="command", required=True)
    add_embeddings_command(commands)
    bench = commands.add_parser("bench")
    add_embeddings_bench(bench.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(argv)
    try:
        return (bench_embeddings if args.command == "bench" else cmd_embeddings)(args)
    except ValueError as error:
        print(f"headscope {args.command}: error: {one_line(error)}")
        return 2


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A prepared tiny BERT with one random-pruning run, in its own HEADSCOPE_HOME."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("cli_embeddings_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    record = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data,
                   score_examples=8, eval_examples=8, device="cpu", name="half")
    )  # fmt: skip
    yield {"home": str(home), "model": str(model.path), "data": str(data.path), "run": record.key}
    patch.undo()


@pytest.fixture
def tiny(tiny_home: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("HEADSCOPE_HOME", tiny_home["home"])
    return tiny_home


def _where(tiny: dict[str, str]) -> list[str]:
    return ["--model", tiny["model"], "--data", tiny["data"], "--device", "cpu", "--no-progress"]


def test_embeddings_writes_coordinates_for_the_original_and_a_run(
    tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "coords.json"
    argv = ["embeddings", *_where(tiny), "--run", tiny["run"], "--sentences", "4",
            "--max-points", "40", "--out", str(out)]  # fmt: skip
    assert run(argv) == 0, capsys.readouterr().out
    printed = capsys.readouterr().out
    assert "original: 8 heads x 40 points" in printed and "half · " in printed
    document = json.loads(out.read_text())
    assert document["request"]["method"] == "pca" and len(document["request"]["sentences"]) == 4
    points = document["points"]
    assert points["kind"] == ["q"] * 20 + ["k"] * 20 and len(points["token"]) == 40
    original, pruned = document["models"]
    assert original["label"] == "original" and len(original["heads"]) == 8
    assert sum(map(sum, pruned["present"])) == 4 and len(pruned["heads"]) == 4
    assert len(original["heads"][0]["coords"]) == 40

    html = tmp_path / "grid.html"
    again = ["embeddings", *_where(tiny), "--text", "a lovely film", "an awful plot",
             "--no-original", "--run", tiny["run"], "--out", str(html)]  # fmt: skip
    assert run(again) == 0
    page = html.read_text()
    assert page.count("plotly.js v") == 1 and "half" in page and "removed" in page


def test_embeddings_refuses_bad_input(
    tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["embeddings", *_where(tiny), "--out", str(tmp_path / "x.png")]) == 2
    assert "must end in .json" in capsys.readouterr().out
    assert run(["embeddings", *_where(tiny), "--text", "  "]) == 2
    assert "only empty sentences" in capsys.readouterr().out
    assert run(["embeddings", *_where(tiny), "--max-points", "1"]) == 2
    assert "use at least 2" in capsys.readouterr().out


def test_quick_bench_writes_json_and_markdown(
    tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, table = tmp_path / "results" / "embeddings.json", tmp_path / "results" / "embeddings.md"
    argv = ["bench", "embeddings", *_where(tiny), "--quick", "--out", str(out),
            "--markdown", str(table)]  # fmt: skip
    assert run(argv) == 0, capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["bench"] == "embeddings" and report["quick"] is True
    assert report["settings"] == {"sentences": 6, "umap_sentences": 3, "max_points": 60}
    assert report["shapes"]["grid"] == [2, 4] and report["shapes"]["heads"] == 8
    assert report["shapes"]["points_pca"] == 60
    timings = report["timings"]
    for name in ("capture_sentences", "capture_umap_sentences", "pca_grid",
                 "umap_first_head_compile", "umap_grid", "reopen"):  # fmt: skip
        assert timings[name] > 0
    assert timings["pca_grid"] == pytest.approx(timings["pca_project"] + timings["pca_figure"])
    assert set(report["within_targets"]) == {"pca_grid", "umap_grid", "reopen"}
    markdown = table.read_text()
    assert markdown == capsys.readouterr().out
    assert "| PCA grid, 6 sentences x 60 points" in markdown
    assert markdown.count("\n| ") == 7  # header + 6 measurements
