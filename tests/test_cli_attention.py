"""`headscope attention` on a tiny prepared model with one pruning run."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import prepared_tiny_setup
from pruning.cli import main
from pruning.cli_attention import role_table


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared tiny BERT with one random-pruning run, in its own HEADSCOPE_HOME."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("cli_attention_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    run = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data,
                   score_examples=8, eval_examples=8, device="cpu", name="half")
    )  # fmt: skip
    yield {"home": home, "model": str(model.path), "data": str(data.path), "run": run}
    patch.undo()


@pytest.fixture
def tiny(tiny_home: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tiny_home["home"]))
    return tiny_home


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], Any]]:
    """Stand-ins for the bertviz builders and the asset loader; records every call."""
    calls: list[tuple[str, list[str], Any]] = []

    def builder(view: str) -> Any:
        def build(tokens: Any, attentions: Any, present: Any, scripts: Any, **kw: Any) -> str:
            calls.append((view, list(tokens), present))
            return f"<html>{view} view of {kw['title']}</html>"

        return build

    html = types.ModuleType("viz.bertviz_html")
    html.build_head_view_html = builder("head")  # type: ignore[attr-defined]
    html.build_model_view_html = builder("model")  # type: ignore[attr-defined]
    assets = types.ModuleType("pruning.assets")
    assets.load_asset_scripts = lambda: {"d3": "//d3"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "viz.bertviz_html", html)
    monkeypatch.setitem(sys.modules, "pruning.assets", assets)
    return calls


def _where(tiny: dict[str, Any]) -> list[str]:
    return ["--model", tiny["model"], "--data", tiny["data"], "--device", "cpu"]


def test_writes_one_html_file_per_model(
    tiny: dict[str, Any],
    views: list[tuple[str, list[str], Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tiny["run"].key
    out = tmp_path / "views" / "att.html"
    argv = ["attention", "a lovely film", *_where(tiny), "--run", key[:8], "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == sorted(["att-original.html", f"att-half-{key[:6]}.html"])
    assert (out.parent / "att-original.html").read_text() == "<html>head view of original</html>"
    assert [v[0] for v in views] == ["head", "head"]
    assert views[0][1] == ["[CLS]", "a", "lovely", "film", "[SEP]"]
    assert views[0][2].all() and int(views[1][2].sum()) == int(tiny["run"].mask.sum())
    printed = capsys.readouterr().out
    assert "original: 5 tokens, 8 of 8 heads" in printed and "wrote" in printed
    assert "(× = removed head)" not in printed


def test_model_view_of_the_run_alone_with_all_role_tables(
    tiny: dict[str, Any],
    views: list[tuple[str, list[str], Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    key = tiny["run"].key
    argv = ["attention", "a dull plot", *_where(tiny), "--run", key, "--no-original",
            "--view", "model", "--out", "m.html", "--roles"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == [f"m-half-{key[:6]}.html"]
    assert [v[0] for v in views] == ["model"]
    printed = capsys.readouterr().out
    for label in ("entropy (bits)", "share to [CLS]", "share to previous", "share to next"):
        assert f"{label} (× = removed head)" in printed
    assert printed.count("H0    H1    H2    H3\n") == 6
    assert printed.count("×") >= 6 * 4 + 6  # four removed heads per table, plus the headers


def test_roles_alone_print_one_table_and_write_no_html(
    tiny: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    # No stand-ins: --roles without --out needs neither the bertviz builders nor the scripts.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEADSCOPE_ASSETS", str(tmp_path / "none"))
    assert main(["attention", "a film", *_where(tiny), "--roles", "cls"]) == 0
    printed = capsys.readouterr().out
    assert "share to [CLS] (× = removed head)" in printed and "entropy" not in printed
    assert printed.count("\n  L") == 2 and not list(tmp_path.iterdir())


def test_json_reports_roles_of_every_model(
    tiny: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attention", "a lovely cast", *_where(tiny), "--run", tiny["run"].key, "--roles",
            "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    original, run = report["models"]
    assert original["label"] == "original" and run["kind"] == "run"
    assert set(original["roles"]) == {"entropy", "cls", "sep", "self", "previous", "next"}
    assert original["tokens"] == ["[CLS]", "a", "lovely", "cast", "[SEP]"]
    assert original["file"] is None and not original["truncated"]
    mask = tiny["run"].mask.tolist()
    assert run["present"] == mask
    for layer, row in enumerate(run["roles"]["self"]):
        assert [value is not None for value in row] == mask[layer]
    assert all(0 <= v <= 1 for row in original["roles"]["cls"] for v in row)


def test_long_text_is_truncated_with_a_note(
    tiny: dict[str, Any], views: list[tuple[str, list[str], Any]], tmp_path: Path, capsys: Any
) -> None:
    argv = ["attention", " ".join(["film"] * 200), *_where(tiny), "--out",
            str(tmp_path / "a.html")]  # fmt: skip
    assert main(argv) == 0
    assert "note: original reads the first 128 of 202 tokens" in capsys.readouterr().err
    assert len(views[0][1]) == 128


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run", "0123456789abcdef"], "No stored run matches '0123456789abcdef'"),
        (["--no-original"], "nothing to explain"),
    ],
)
def test_bad_input_exits_with_status_2(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["attention", "a film", *_where(tiny), "--roles", *extra]) == 2
    assert message in capsys.readouterr().err


def test_empty_text_and_missing_assets_exit_with_status_2(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["attention", "  ", *_where(tiny)]) == 2
    assert "type a sentence" in capsys.readouterr().err
    assets = types.ModuleType("pruning.assets")

    def missing() -> dict[str, str]:
        raise OSError("The scripts are missing. Run `headscope assets install`.")

    assets.load_asset_scripts = missing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pruning.assets", assets)
    assert main(["attention", "a film", *_where(tiny)]) == 2
    assert "headscope assets install" in capsys.readouterr().err


def test_role_table_marks_removed_heads() -> None:
    import numpy as np

    rows = role_table(np.array([[0.5, np.nan], [1.0, 0.25]]))
    assert rows == ["        H0    H1", "L0    0.50     ×", "L1    1.00  0.25"]
