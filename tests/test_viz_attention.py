"""The attention heatmap and the head-role map: data, labels, hover, removed heads, validation."""

from __future__ import annotations

import numpy as np
import pytest

from viz.attention import build_attention_heatmap, build_head_roles_figure, shared_range

TOKENS = ["[CLS]", "the", "film", "the", "[SEP]"]


def _matrix(n: int = 5, seed: int = 0) -> np.ndarray:
    raw = np.random.default_rng(seed).random((n, n))
    return raw / raw.sum(axis=1, keepdims=True)


def test_heatmap_keeps_repeated_tokens_and_shows_the_weights() -> None:
    matrix = _matrix()
    fig = build_attention_heatmap(TOKENS, matrix, title="original · L0 H1")
    (trace,) = fig.data
    np.testing.assert_allclose(np.asarray(trace.z), matrix)
    assert list(fig.layout.xaxis.ticktext) == TOKENS == list(fig.layout.yaxis.ticktext)
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2, 3, 4]  # "the" twice, not merged
    assert fig.layout.yaxis.autorange == "reversed"
    assert trace.hovertext[1][2] == f"the → film: {matrix[1, 2]:.3f}"
    assert trace.zmin == 0 and trace.zmax == pytest.approx(matrix.max())
    assert fig.layout.title.text == "original · L0 H1"


def test_heatmap_takes_a_shared_range_and_stays_readable_for_64_tokens() -> None:
    tokens = [f"tok{i}" for i in range(64)]
    fig = build_attention_heatmap(tokens, _matrix(64), title="t", colour_range=(0.0, 0.5))
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 0.5)
    assert fig.layout.xaxis.tickfont.size >= 8 and fig.layout.height >= 64 * 10
    long = build_attention_heatmap(["a" * 40, "b"], _matrix(2), title="t")
    assert long.layout.xaxis.ticktext[0].endswith("…") and len(long.layout.xaxis.ticktext[0]) == 14
    assert long.data[0].hovertext[0][1].startswith("a" * 40)


@pytest.mark.parametrize(
    ("tokens", "matrix", "message"),
    [
        (TOKENS, np.ones((5, 4)), r"\(T, T\) with T = 5"),
        (TOKENS[:3], np.ones((5, 5)), r"\(T, T\) with T = 3"),
        ([], np.ones((0, 0)), "T = 0"),
        (TOKENS, np.full((5, 5), np.nan), "head was removed"),
        (TOKENS, np.full((5, 5), "x"), "numeric"),
    ],
)
def test_heatmap_rejects_bad_input(tokens: list[str], matrix: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_attention_heatmap(tokens, matrix, title="t")


def test_heatmap_rejects_a_bad_colour_range() -> None:
    with pytest.raises(ValueError, match="low < high"):
        build_attention_heatmap(TOKENS, _matrix(), title="t", colour_range=(1.0, 0.0))


def _roles() -> tuple[dict[str, np.ndarray], np.ndarray]:
    present = np.ones((3, 4), dtype=bool)
    present[1, 2] = present[2, 0] = False
    values = np.linspace(0, 1, 12).reshape(3, 4)
    values[~present] = np.nan
    return {"cls": values, "entropy": values * 3}, present


def test_role_map_colours_present_heads_and_marks_removed_ones() -> None:
    roles, present = _roles()
    fig = build_head_roles_figure(roles, present, "cls", title="original", label="share to [CLS]")
    status, scores = fig.data[0], fig.data[1]
    marks = np.asarray(status.text)
    assert marks[1, 2] == marks[2, 0] == "×" and marks[0, 0] == ""
    z = np.asarray(scores.z, dtype=float)
    np.testing.assert_allclose(z[present], roles["cls"][present])
    assert np.isnan(z[~present]).all()
    assert "share to [CLS]: 0.1818" in scores.hovertext[0][2]
    assert "10 of 12 heads kept" in fig.layout.title.text
    assert fig.layout.coloraxis.colorbar.title.text == "share to [CLS]"
    assert any(t.name == "removed ×" for t in fig.data[2:])


def test_role_maps_share_one_colour_range() -> None:
    roles, present = _roles()
    dense = {"cls": np.full((3, 4), 2.0)}
    bounds = shared_range([roles["cls"], dense["cls"]])
    assert bounds == (0.0, 2.0)
    for values, grid in ((roles, present), (dense, np.ones((3, 4), dtype=bool))):
        fig = build_head_roles_figure(values, grid, "cls", title="t", colour_range=bounds)
        assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == bounds
    assert shared_range([np.full((2, 2), np.nan)]) is None


def test_role_map_rejects_bad_input() -> None:
    roles, present = _roles()
    with pytest.raises(ValueError, match="Unknown head role 'sep'"):
        build_head_roles_figure(roles, present, "sep", title="t")
    with pytest.raises(ValueError, match="must be boolean"):
        build_head_roles_figure(roles, present.astype(int), "cls", title="t")
    with pytest.raises(ValueError, match="has shape"):
        build_head_roles_figure({"cls": np.ones((2, 4))}, present, "cls", title="t")
    with pytest.raises(ValueError, match=r"bool \(n_layers, n_heads\)"):
        build_head_roles_figure(roles, present.ravel(), "cls", title="t")
