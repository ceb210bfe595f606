"""The HTML report of stored runs (pruning.report) and ``headscope report`` (pruning.cli_report)."""

from __future__ import annotations

import argparse
import html
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cache.run_store import RunStore
from conftest import save_small_bert, sentiment_rows, write_csv
from pruning.cli_report import add_report_command, cmd_report, resolve_keys
from pruning.data import DataSpec
from pruning.models import ModelSpec
from pruning.pipeline import RunRequest, run_pruning
from pruning.prepare import prepare_model
from pruning.report import build_report, report_file_name, write_report
from pruning.train import TrainConfig

# User text that must come out escaped: run names and the class names read from the CSV.
EVIL_NAME = "<script>alert('run')</script> & \"quoted\""
LABELS = ("<i>rotten</i>", 'fresh & "good"')
# method -> (config, figures the report draws for it besides the mask heatmap)
RUNS: dict[str, tuple[dict[str, object], int]] = {
    "hisp": ({"sparsity": 0.5}, 0),
    "astar": ({"budget": 5.0}, 3),  # head grid after the search, sorted costs, search progress
    "autoattention": ({"steps": 6, "snapshot_every": 2, "batch_size": 8}, 2),  # curves, animation
    "mcap": (
        {
            "episode_size": 4,
            "update_every": 2,
            "maps_per_episode": 2,
            "map_size": 8,
            "max_train_examples": 16,
        },
        1,
    ),
    "deepcuts": ({"compression_ratio": 2.0, "grad_batches": 2, "batch_size": 8}, 1),
    "random_budget": ({"budget": 5.0, "trials": 3}, 1),
}
# With 2+ runs: the Pareto figure, the metric changes and the masks side by side.
COMPARISON_FIGURES = 3
EXTERNAL = re.compile(r"(?i)(https?:|ftp:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}")


def _library(document: str) -> tuple[str, str]:
    """(the inlined plotly.js, the document without it)."""
    start = document.index("<script type='text/javascript'>")
    end = document.index("</script>", start) + len("</script>")
    return document[start:end], document[:start] + document[end:]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A home with a tiny prepared classifier (class names with HTML in them) and one run of each
    method in RUNS; yields the home and the run keys by method."""
    home = tmp_path_factory.mktemp("report_home")
    folder = tmp_path_factory.mktemp("report_setup")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    try:
        model = ModelSpec.local(save_small_bert(folder / "tiny-bert", LABELS))
        rows = [(text, LABELS[label == "positive"]) for text, label in sentiment_rows(120)]
        data = DataSpec(name="csv", path=str(write_csv(folder / "reviews.csv", rows)))
        prepare_model(model, data, TrainConfig(max_steps=2, batch_size=16), device="cpu")
        keys = {}
        for method, (config, _) in RUNS.items():
            request = RunRequest(
                method=method,
                config=config,
                model=model,
                data=data,
                score_examples=16,
                eval_examples=16,
                recovery_steps=2 if method == "hisp" else 0,
                name=f"{EVIL_NAME} {method}",
                device="cpu",
            )
            keys[method] = run_pruning(request).key
        yield home, keys
    finally:
        patch.undo()


def test_the_report_shows_every_run_escaped_with_figures_tables_config_and_versions(
    stored: tuple[Path, dict[str, str]],
) -> None:
    home, keys = stored
    store = RunStore(home / "runs")
    document = build_report(list(keys.values()), store, title="Report <b>1</b>")
    assert document.startswith("<!DOCTYPE html>") and document.rstrip().endswith("</html>")
    assert "<title>Report &lt;b&gt;1&lt;/b&gt;</title>" in document
    library, rest = _library(document)
    assert "plotly.js v" in library and document.count("plotly.js v") == 1  # inlined once
    # Every run by its escaped name; no raw user text anywhere outside the figures' JSON.
    for method in RUNS:
        assert f"<h2>{html.escape(f'{EVIL_NAME} {method}')}</h2>" in rest
    assert "<script>alert" not in rest and "<i>rotten</i>" not in rest
    assert html.escape(f'"{LABELS[0]}"') in rest  # the class names, in the configuration
    # One figure per run's mask, the method figures, and the comparison's.
    expected = len(RUNS) + sum(n for _, n in RUNS.values()) + COMPARISON_FIGURES
    assert rest.count('class="plotly-graph-div"') == expected
    assert f"<!-- figures: {expected} -->" in rest
    for title in ("Search progress", "MCAP controller training", "Honest size", "gate values"):
        assert title in rest
    # Tables: metrics (recovered for the HISP run), cost, configuration, versions.
    assert rest.count("<h3>Metrics</h3>") == len(RUNS) and "Pruned + recovered" in rest
    assert rest.count("<h3>Cost</h3>") == len(RUNS) and "FLOPs removed" in rest
    assert "config · budget" in rest and "<code>5.0</code>" in rest  # A*'s budget as stored
    assert "setting · recovery_lr" in rest and "<code>5e-05</code>" in rest
    assert rest.count("Software versions of the run") == len(RUNS)
    assert f"<td>{html.escape(torch.__version__)}</td>" in rest
    assert "Report made with" in rest and "<td>plotly</td>" in rest
    assert "<section id='comparison'>" in rest


def test_the_report_references_nothing_outside_the_file(
    stored: tuple[Path, dict[str, str]],
) -> None:
    home, keys = stored
    document = build_report(list(keys.values()), RunStore(home / "runs"))
    library, rest = _library(document)
    assert not EXTERNAL.search(rest), EXTERNAL.search(rest)
    assert not re.search(r"(?i)\b(src|href)\s*=\s*(?![\"']?#)", rest)  # only in-page anchors
    assert not re.search(r"(?i)url\(|@import|<link|<iframe|<img", rest)
    assert "<script src" not in document.lower()
    # The library is plotly's bundled plotly.min.js, used as is.
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs() in library


def test_one_run_has_no_comparison_and_keys_repeat_once(
    stored: tuple[Path, dict[str, str]],
) -> None:
    home, keys = stored
    document = build_report([keys["astar"], keys["astar"]], RunStore(home / "runs"))
    _, rest = _library(document)
    assert "<section id='comparison'>" not in rest
    assert rest.count("<section id='run-") == 1
    assert rest.count('class="plotly-graph-div"') == 1 + RUNS["astar"][1]


def test_unknown_keys_raise_a_clear_error(stored: tuple[Path, dict[str, str]]) -> None:
    home, keys = stored
    store = RunStore(home / "runs")
    with pytest.raises(ValueError, match=r"No stored run has the keys '0123456789abcdef', 'nope'"):
        build_report([keys["hisp"], "0123456789abcdef", "nope"], store)
    with pytest.raises(ValueError, match="headscope runs"):
        build_report(["fedcba9876543210"], store)
    with pytest.raises(ValueError, match="at least one run key"):
        build_report([], store)


def test_write_report_is_atomic(
    stored: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, keys = stored
    store = RunStore(home / "runs")
    target = tmp_path / "out" / "report.html"
    written = write_report([keys["hisp"]], target, store, title="first")
    assert written == target and "<title>first</title>" in target.read_text(encoding="utf-8")
    assert os.stat(target).st_mode & 0o644 == 0o644
    before = target.read_bytes()
    # A bad key: nothing is written. A failure while renaming: the old file stays, no leftovers.
    with pytest.raises(ValueError):
        write_report(["0123456789abcdef"], target, store)

    def fail(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_report([keys["astar"]], target, store, title="second")
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headscope")
    add_report_command(parser.add_subparsers(dest="command"))
    return parser


def test_the_cli_writes_the_report_of_full_keys_and_prefixes(
    stored: tuple[Path, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, keys = stored
    monkeypatch.setenv("HEADSCOPE_HOME", str(home))
    out = tmp_path / "r.html"
    argv = ["report", keys["hisp"], keys["astar"][:8], "--out", str(out), "--title", "CLI <t>"]
    args = _parser().parse_args(argv)
    assert cmd_report(args) == 0
    text = out.read_text(encoding="utf-8")
    assert "<title>CLI &lt;t&gt;</title>" in text
    assert f"id='run-{keys['hisp']}'" in text and f"id='run-{keys['astar']}'" in text
    assert "wrote the report of 2 run(s)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="should end in .html"):
        cmd_report(_parser().parse_args(["report", keys["hisp"], "--out", str(tmp_path / "r")]))
    with pytest.raises(ValueError, match="No stored run has a key starting with 'ffff0000'"):
        cmd_report(_parser().parse_args(["report", "ffff0000", "--out", str(out)]))


def test_resolve_keys_refuses_short_ambiguous_and_non_hex_keys() -> None:
    known = ["aaaa000000000001", "aaaa000000000002", "bbbb000000000003"]
    assert resolve_keys(["bbbb", "AAAA000000000002"], known) == known[2:0:-1]
    with pytest.raises(ValueError, match="matches 2 runs"):
        resolve_keys(["aaaa"], known)
    with pytest.raises(ValueError, match="too short"):
        resolve_keys(["bb"], known)
    with pytest.raises(ValueError, match="not a run key"):
        resolve_keys(["../etc"], known)


def test_report_file_names_carry_no_path_and_name_the_runs() -> None:
    key = "0123456789abcdef"
    assert report_file_name([key], ["HISP 50%"]) == f"headscope-report-HISP-50-{key}.html"
    assert report_file_name([key], ["../../.bashrc"]) == f"headscope-report-bashrc-{key}.html"
    assert report_file_name([key], ["///"]) == f"headscope-report-{key}.html"
    several = report_file_name([key, "fedcba9876543210"], ["a", "b"])
    assert re.fullmatch(r"headscope-report-2-runs-[0-9a-f]{10}\.html", several)
    assert report_file_name([key, key], ["a", "a"]) == f"headscope-report-a-{key}.html"
    with pytest.raises(ValueError, match="at least one run key"):
        report_file_name([])


def _claim(claim_id: str, verdict: str | None, series: dict) -> dict:
    return {
        "id": claim_id, "title": f"<b>{claim_id}</b>", "claim": "The paper says & so.",
        "verdict": verdict, "statement": "Numbers <here>.", "reference": "Some paper, Table 1",
        "protocol": "model <x>", "rule": "a rule", "fewer_than_paper": ["1 seed <3"],
        "run_keys": ["0123456789abcdef"], "series": series,
    }  # fmt: skip


def test_the_claims_section_stands_alone_escaped_and_offline(tmp_path: Path) -> None:
    claims = [
        _claim("astar_vs_random", "holds", {"astar_heads": {0: 9}, "random_heads": [3, 4, 5]}),
        _claim("mcap_vs_random_entropy", None, {"accuracy": {}}),
        _claim("deepcuts_vs_layer_magnitude", "does not hold", {"accuracy": {}}),
    ]
    document = build_report([], RunStore(tmp_path / "runs"), claims=claims, title="Claims")
    _, rest = _library(document)
    assert "<section id='claims'><h2>Paper claims</h2>" in rest
    assert rest.count("<h3>") == 3 and "&lt;b&gt;astar_vs_random&lt;/b&gt;" in rest
    assert "<span class='verdict good'>holds</span>" in rest
    assert "<span class='verdict open'>not measured</span>" in rest
    assert "<span class='verdict bad'>does not hold</span>" in rest
    assert "Numbers &lt;here&gt;." in rest and "<li>1 seed &lt;3</li>" in rest
    assert rest.count('class="plotly-graph-div"') == 3 and "<code>0123456789abcdef</code>" in rest
    assert "3 paper claims, 0 runs" in rest
    assert not EXTERNAL.search(rest)
    with pytest.raises(ValueError, match="at least one run key"):
        build_report([], RunStore(tmp_path / "runs"), claims=[])
