"""Joint query/key embedding figures: the layer x head grid and the zoomed head."""

from __future__ import annotations

import numpy as np
import pytest

from viz.embeddings import (
    KEY_COLOUR,
    QUERY_COLOUR,
    build_embedding_grid,
    build_head_embedding,
    embedding_cell_px,
)
from viz.grid import REMOVED_COLOUR

KINDS = np.array(["q"] * 5 + ["k"] * 5)


def _coords(n_layers: int = 2, n_heads: int = 3, n_points: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n_layers, n_heads, n_points, 2))


def _cell_notes(figure: object) -> dict[str, str]:
    """Annotation text of each subplot cell, by its x axis name ("x", "x2", ...)."""
    return {
        a.xref.replace(" domain", ""): a.text
        for a in figure.layout.annotations  # type: ignore[attr-defined]
        if a.xref.endswith("domain")
    }


def _n_points(trace: object) -> int:
    """Drawn points of a trace (legend-only traces hold ``[None]``, cell fillers nothing)."""
    values = getattr(trace, "x", None)
    return 0 if values is None else sum(v is not None for v in values)


def test_the_grid_has_one_subplot_per_head_with_queries_and_keys() -> None:
    coords = _coords()
    present = np.ones((2, 3), dtype=bool)
    figure = build_embedding_grid(coords, KINDS, present, title="original · PCA")
    x_axes = [name for name in figure.layout if name.startswith("xaxis")]  # type: ignore[attr-defined]
    y_axes = [name for name in figure.layout if name.startswith("yaxis")]  # type: ignore[attr-defined]
    assert len(x_axes) == len(y_axes) == 6
    traces = [t for t in figure.data if _n_points(t) > 0]
    assert len(traces) == 12 and {t.type for t in traces} == {"scattergl"}
    assert {t.xaxis for t in traces} == {"x", *(f"x{i}" for i in range(2, 7))}
    queries = [t for t in traces if t.name == "query"]
    keys = [t for t in traces if t.name == "key"]
    assert len(queries) == len(keys) == 6
    assert {t.marker.color for t in queries} == {QUERY_COLOUR}
    assert {t.marker.color for t in keys} == {KEY_COLOUR}
    # Layer 1, head 2 is subplot 6: its queries are the first five points.
    last = next(t for t in queries if t.xaxis == "x6")
    assert np.allclose(last.x, coords[1, 2, :5, 0]) and np.allclose(last.y, coords[1, 2, :5, 1])
    assert sum(t.showlegend is not False for t in traces) == 2  # one legend entry per kind
    for axis in x_axes:
        assert figure.layout[axis].showticklabels is False  # type: ignore[index]
    assert figure.layout.title.text == "original · PCA"
    texts = [a.text for a in figure.layout.annotations]
    assert {"L0", "L1", "H0", "H1", "H2"} <= set(texts)
    assert not _cell_notes(figure)


def test_removed_heads_are_greyed_and_pending_heads_marked() -> None:
    coords = _coords()
    present = np.array([[True, False, True], [True, True, True]])
    projected = np.array([[True, True, False], [True, False, True]])
    coords[0, 2] = np.nan  # a pending head has no coordinates yet
    figure = build_embedding_grid(coords, KINDS, present, projected)
    notes = _cell_notes(figure)
    assert notes == {"x2": "removed", "x3": "pending", "x5": "pending"}
    greyed = [s for s in figure.layout.shapes if s.fillcolor == REMOVED_COLOUR]
    assert [s.xref for s in greyed] == ["x2 domain"]
    drawn = {t.xaxis for t in figure.data if _n_points(t) > 1}
    assert drawn == {"x", "x4", "x6"}
    assert "removed head" in {t.name for t in figure.data}


def test_a_grid_with_nothing_projected_still_explains_its_colours() -> None:
    coords = np.full((1, 2, 10, 2), np.nan)
    figure = build_embedding_grid(coords, KINDS, np.ones((1, 2), bool), np.zeros((1, 2), bool))
    assert _cell_notes(figure) == {"x": "pending", "x2": "pending"}
    assert {"query", "key"} <= {t.name for t in figure.data}


def test_the_grid_is_sized_for_a_wide_page() -> None:
    figure = build_embedding_grid(_coords(6, 12, 10), KINDS, np.ones((6, 12), bool))
    assert 80 <= embedding_cell_px(12) <= 110
    assert 1000 <= figure.layout.width <= 1400 and 500 <= figure.layout.height <= 900
    small = build_embedding_grid(_coords(6, 12, 10), KINDS, np.ones((6, 12), bool), cell_px=45)
    assert small.layout.width < 700


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"coords": np.zeros((2, 3, 10))}, "n_layers, n_heads, n_points, 2"),
        ({"kinds": np.array(["q"] * 9)}, "one 'q' or 'k' per point"),
        ({"kinds": np.array(["q"] * 5 + ["v"] * 5)}, "only hold 'q'"),
        ({"present": np.ones((2, 3))}, "must be boolean"),
        ({"present": np.ones((3, 2), bool)}, "shape"),
        ({"projected": np.ones((2, 2), bool)}, "projected has shape"),
    ],
)
def test_grid_inputs_are_checked(change: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "coords": _coords(),
        "kinds": KINDS,
        "present": np.ones((2, 3), bool),
        "projected": None,
    }
    with pytest.raises(ValueError, match=message):
        build_embedding_grid(**{**args, **change})  # type: ignore[arg-type]


def _head(colour_by: str) -> object:
    coords = np.arange(20, dtype=float).reshape(10, 2)
    tokens = ["[CLS]", "<b>", "film", "film", "[SEP]"] * 2
    return build_head_embedding(
        coords, KINDS, tokens, [0, 0, 1, 1, 1] * 2, [0, 1, 0, 1, 2] * 2, colour_by=colour_by
    )


def test_the_zoomed_head_shows_tokens_on_hover() -> None:
    figure = _head("kind")
    query, key = figure.data  # type: ignore[attr-defined]
    assert (query.name, key.name) == ("query", "key")
    assert query.marker.color == QUERY_COLOUR and key.marker.color == KEY_COLOUR
    assert list(query.x) == [0, 2, 4, 6, 8]
    assert query.hovertext[1] == "<b>&lt;b&gt;</b><br>query · sentence 1 · position 1"
    assert key.hovertext[2] == "<b>film</b><br>key · sentence 2 · position 0"


def test_the_zoomed_head_colours_by_position_or_token() -> None:
    by_position = _head("position")
    data = [t for t in by_position.data if _n_points(t)]  # type: ignore[attr-defined]
    assert list(data[0].marker.color) == [0, 1, 0, 1, 2]
    assert data[0].marker.symbol == "circle" and data[1].marker.symbol == "diamond"
    assert by_position.layout.coloraxis.colorbar.title.text == "position"  # type: ignore[attr-defined]
    by_token = _head("token")
    query = next(t for t in by_token.data if _n_points(t))  # type: ignore[attr-defined]
    colours = list(query.marker.color)
    assert colours[2] == colours[3] and len(set(colours)) >= 2  # same token, same colour
    assert colours == list(_head("token").data[0].marker.color)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("coords", "colour_by", "message"),
    [
        (np.full((10, 2), np.nan), "kind", "pick a projected head"),
        (np.zeros((10, 3)), "kind", r"\(n_points, 2\)"),
        (np.zeros((10, 2)), "size", "use one of kind, position, token"),
        (np.zeros((9, 2)), "kind", "one 'q' or 'k' per point"),
    ],
)
def test_head_inputs_are_checked(coords: np.ndarray, colour_by: str, message: str) -> None:
    tokens = ["a"] * 10
    with pytest.raises(ValueError, match=message):
        build_head_embedding(coords, KINDS, tokens, [0] * 10, [0] * 10, colour_by=colour_by)
