"""Joint query/key embeddings: token sampling, pairing, projections, the grid and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import real_tokenizer, small_bert
from pruning.capture import SentenceCapture
from pruning.embedding_cache import EmbeddingRequest, ProjectionCache, compute_grid
from pruning.embeddings import (
    JointPoints,
    capture_points,
    collect_points,
    normalise_qk,
    sample_tokens,
)
from pruning.heads import remove_heads
from pruning.projections import project, project_grid, projection_params
from pruning.run_models import ModelRef


def _captures(lengths: list[int], n_layers: int = 2, n_heads: int = 3, dim: int = 4) -> list:
    """Synthetic captures whose vectors encode (layer, head, sentence, position, q/k)."""
    captures = []
    present = torch.ones(n_layers, n_heads, dtype=torch.bool)
    present[1, 2] = False
    for s, length in enumerate(lengths):
        grid = torch.zeros(n_layers, n_heads, length, dim)
        for layer in range(n_layers):
            for head in range(n_heads):
                grid[layer, head, :, 0] = layer
                grid[layer, head, :, 1] = head
        grid[..., 2] = s
        grid[..., 3] = torch.arange(length, dtype=torch.float32)
        queries, keys = grid.clone(), grid.clone()
        keys[..., 3] += 1000  # keys differ from queries, so pairing can be checked
        queries[1, 2] = keys[1, 2] = float("nan")
        captures.append(
            SentenceCapture(
                tokens=tuple(f"s{s}t{p}" for p in range(length)),
                attentions=torch.empty(0),
                queries=queries,
                keys=keys,
                present=present,
            )
        )
    return captures


def test_sampling_respects_the_cap_and_the_seed() -> None:
    tokens = [[f"w{i}"] * n for i, n in enumerate([30, 50, 20])]
    sample = sample_tokens(tokens, max_points=41, seed=3)
    assert sample.n_tokens == 20 and sample.n_points == 40
    assert sample.total_tokens == 100 and sample.n_sentences == 3
    again = sample_tokens(tokens, max_points=41, seed=3)
    assert np.array_equal(sample.sentence, again.sentence)
    assert np.array_equal(sample.position, again.position)
    other = sample_tokens(tokens, max_points=41, seed=4)
    assert not (
        np.array_equal(sample.sentence, other.sentence)
        and np.array_equal(sample.position, other.position)
    )
    pairs = list(zip(sample.sentence.tolist(), sample.position.tolist(), strict=True))
    assert pairs == sorted(set(pairs))  # distinct tokens, in sentence order
    whole = sample_tokens(tokens, max_points=1000)
    assert whole.n_tokens == 100 and list(whole.position[:3]) == [0, 1, 2]
    assert list(whole.point_kinds()[:100]) == ["q"] * 100
    assert list(whole.point_kinds()[100:]) == ["k"] * 100
    with pytest.raises(ValueError, match="at least 2"):
        sample_tokens(tokens, max_points=1)
    with pytest.raises(ValueError, match="no tokens"):
        sample_tokens([[], []])


def test_each_sampled_token_keeps_its_query_and_its_key() -> None:
    points = collect_points(_captures([5, 7, 4]), max_points=12, seed=1)
    sample = points.sample
    assert points.queries.shape == (2, 3, 6, 4) and sample.n_points == 12
    assert points.present.tolist() == [[True] * 3, [True, True, False]]
    for i in range(sample.n_tokens):
        query, key = points.queries[0, 1, i], points.keys[0, 1, i]
        expected = [0, 1, sample.sentence[i], sample.position[i]]
        assert query.tolist() == expected
        assert key.tolist() == [*expected[:3], expected[3] + 1000]
        assert sample.tokens[i] == f"s{sample.sentence[i]}t{sample.position[i]}"
    joint = points.head_points(1, 0, normalise=False)
    assert joint is not None and joint.shape == (12, 4)
    assert np.array_equal(joint[:6], points.queries[1, 0])
    assert np.array_equal(joint[6:], points.keys[1, 0])
    assert list(sample.point_tokens()[:6]) == list(sample.point_tokens()[6:])
    assert points.head_points(1, 2) is None  # removed head
    with pytest.raises(ValueError, match="with_qk=True"):
        collect_points([SentenceCapture(("a",), torch.empty(0), None, None, torch.ones(1, 1))])


def test_normalisation_aligns_centroids_and_norms_and_keeps_attention() -> None:
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(40, 8)) * 3 + 5
    keys = rng.normal(size=(40, 8)) - 2
    q, k = normalise_qk(queries, keys)
    assert np.allclose(q.mean(axis=0) / np.linalg.norm(q.mean(axis=0)),
                       k.mean(axis=0) / np.linalg.norm(k.mean(axis=0)))  # fmt: skip
    assert np.isclose(np.linalg.norm(q, axis=1).mean(), np.linalg.norm(k, axis=1).mean())

    def softmax(logits: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    assert np.allclose(softmax(queries @ keys.T), softmax(q @ k.T))


def test_pca_of_a_known_set() -> None:
    t = np.linspace(-1, 1, 21)
    along, across = 10 * t, t**2 - (t**2).mean()  # centred and uncorrelated (odd vs even)
    u = np.array([1.0, 2.0, 2.0]) / 3
    v = np.array([2.0, 1.0, -2.0]) / 3
    points = np.outer(along, u) + np.outer(across, v) + 7.0
    coords = project(points, "pca")
    assert coords.shape == (21, 2) and coords.dtype == np.float32
    # The components are u and v up to sign; the largest loading of each is made positive.
    assert np.allclose(coords[:, 0], along, atol=1e-5)
    assert np.allclose(coords[:, 1], -across, atol=1e-5)
    assert np.array_equal(coords, project(points, "pca"))
    assert np.array_equal(project(np.ones((1, 3)), "pca"), np.zeros((1, 2)))


def test_projection_settings_are_checked() -> None:
    assert projection_params("umap") == {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200}
    assert projection_params("tsne", {"perplexity": 10})["perplexity"] == 10.0
    with pytest.raises(ValueError, match="use one of pca, umap, tsne"):
        project(np.ones((3, 2)), "mds")
    with pytest.raises(ValueError, match="takes no parameter perplexity"):
        projection_params("umap", {"perplexity": 5})
    with pytest.raises(ValueError, match="from 2 to 200"):
        projection_params("umap", {"n_neighbors": 1})
    with pytest.raises(ValueError, match="whole number"):
        projection_params("umap", {"n_epochs": 2.5})
    with pytest.raises(ValueError, match="NaN"):
        project(np.full((4, 2), np.nan), "pca")
    with pytest.raises(ValueError, match="non-empty 2-D"):
        project(np.ones(5), "pca")


def test_tsne_is_seeded_and_separates_two_clusters() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 20])
    coords = project(points, "tsne", seed=0, params={"perplexity": 5, "max_iter": 250})
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    again = project(points, "tsne", seed=0, params={"perplexity": 5, "max_iter": 250})
    assert np.allclose(coords, again)
    gap = np.linalg.norm(coords[:30].mean(0) - coords[30:].mean(0))
    assert gap > 3 * max(coords[:30].std(0).max(), coords[30:].std(0).max())
    assert np.array_equal(project(points[:5], "tsne"), project(points[:5], "pca"))  # too few


@pytest.mark.slow  # umap-learn's first fit in a process compiles numba code (10-40 s)
def test_umap_is_seeded_and_separates_two_clusters() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 20])
    params = {"n_neighbors": 10, "n_epochs": 50}
    coords = project(points, "umap", seed=0, params=params)
    assert coords.shape == (80, 2) and np.isfinite(coords).all()
    assert np.allclose(coords, project(points, "umap", seed=0, params=params))
    gap = np.linalg.norm(coords[:40].mean(0) - coords[40:].mean(0))
    assert gap > 3 * max(coords[:40].std(0).max(), coords[40:].std(0).max())


def test_project_grid_skips_removed_heads_stops_when_asked_and_continues() -> None:
    points = collect_points(_captures([6, 6]), max_points=20)
    seen: list[tuple[int, int]] = []
    full = project_grid(points, "pca", on_head=lambda layer, head, _c: seen.append((layer, head)))
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert full.complete and full.heads_done == 5
    assert full.projected.tolist() == [[True] * 3, [True, True, False]]
    assert np.isnan(full.coords[1, 2]).all() and np.isfinite(full.coords[0, 0]).all()

    calls = iter(range(100))
    partial = project_grid(points, "pca", should_stop=lambda: next(calls) >= 2)
    assert partial.heads_done == 2 and not partial.complete
    assert partial.projected.tolist() == [[True, True, False], [False, False, False]]
    seen.clear()
    resumed = project_grid(
        points, "pca", initial=partial, on_head=lambda layer, head, _c: seen.append((layer, head))
    )
    assert resumed.complete and len(seen) == 5
    assert np.array_equal(resumed.coords, full.coords, equal_nan=True)
    with pytest.raises(ValueError, match="other settings"):
        project_grid(points, "pca", initial=partial, normalise=False)


def test_capture_points_on_a_tiny_model_marks_removed_heads() -> None:
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = False
    model = remove_heads(small_bert(), mask)
    sentences = ["a lovely film", "an awful, boring plot", "the cast"] * 3
    points = capture_points(model, real_tokenizer(), sentences, max_points=30, batch_size=4)
    assert points.grid == (2, 4) and points.present.tolist() == mask.tolist()
    assert points.sample.n_tokens == 15 and points.sample.n_sentences == 9
    assert points.sample.total_tokens == 3 * (5 + 7 + 4)  # [CLS] ... [SEP] each
    assert points.head_points(0, 1) is None and points.head_points(1, 3) is None
    kept = points.head_points(0, 0)
    assert kept is not None and kept.shape == (30, 8) and np.isfinite(kept).all()
    grid = project_grid(points, "pca")
    assert grid.heads_done == 6 and grid.complete
    with pytest.raises(ValueError, match="no empty ones"):
        capture_points(model, real_tokenizer(), ["fine", "  "])


def _request(**changes: object) -> EmbeddingRequest:
    base: dict[str, object] = {"sentences": ("one", "two"), "method": "umap", "params": None}
    return EmbeddingRequest.make(**{**base, **changes})  # type: ignore[arg-type]


def test_request_keys_change_with_every_setting() -> None:
    base = _request()
    fingerprint = "prepared:abc"
    variants = [
        _request(sentences=("one", "three")),
        _request(method="tsne"),
        _request(params={"n_neighbors": 5}),
        _request(max_points=500),
        _request(seed=1),
        _request(normalise=False),
        _request(max_length=64),
    ]
    keys = {base.grid_key(fingerprint), base.grid_key("run:abc")}
    keys |= {v.grid_key(fingerprint) for v in variants}
    assert len(keys) == 2 + len(variants)
    same_points = [
        _request(method="pca"),
        _request(normalise=False),
        _request(params={"min_dist": 0.5}),
    ]
    assert {v.points_key(fingerprint) for v in same_points} == {base.points_key(fingerprint)}
    assert base.points_key(fingerprint) != _request(seed=2).points_key(fingerprint)
    assert EmbeddingRequest.from_dict(base.to_dict()) == base
    assert base.param_dict == {"min_dist": 0.1, "n_epochs": 200, "n_neighbors": 15}
    with pytest.raises(ValueError, match="no empty ones"):
        _request(sentences=("fine", " "))
    with pytest.raises(ValueError, match="no empty ones"):
        _request(sentences=())


def test_cache_round_trips_points_and_grids(tmp_path: Path) -> None:
    cache = ProjectionCache(tmp_path / "embeddings")
    points = collect_points(_captures([4, 5]), max_points=10, seed=2)
    request = _request(method="pca")
    points_key, grid_key = request.points_key("p:x"), request.grid_key("p:x")
    assert cache.get_points(points_key) is None and cache.get_grid(grid_key) is None
    cache.put_points(points_key, points)
    back = cache.get_points(points_key)
    assert back is not None and back.sample.tokens == points.sample.tokens
    assert np.array_equal(back.queries, points.queries, equal_nan=True)
    assert np.array_equal(back.present, points.present)
    grid = project_grid(points, "pca")
    cache.put_grid(grid_key, grid)
    again = cache.get_grid(grid_key)
    assert again is not None and again.complete and again.method == "pca"
    assert np.array_equal(again.coords, grid.coords, equal_nan=True)
    assert np.array_equal(again.sample.position, grid.sample.position)
    with pytest.raises(ValueError, match="not an embedding key"):
        cache.get_grid("../etc")
    assert not list((tmp_path / "embeddings").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["arrays", "json", "digest", "other key"])
def test_a_damaged_entry_is_moved_aside_and_treated_as_missing(tmp_path: Path, damage: str) -> None:
    cache = ProjectionCache(tmp_path)
    points = collect_points(_captures([4, 5]), max_points=10)
    key = _request(method="pca").grid_key("p:x")
    cache.put_grid(key, project_grid(points, "pca"))
    arrays, meta = cache.paths_for(key)
    if damage == "arrays":
        arrays.write_bytes(b"\x00garbage")
    elif damage == "json":
        meta.write_text("{not json")
    elif damage == "digest":
        meta.write_text(meta.read_text().replace('"digest": "', '"digest": "0'))
    else:
        other = _request(method="pca", seed=9).grid_key("p:x")
        meta.write_text(meta.read_text().replace(key, other))
    assert cache.get_grid(key) is None
    assert not arrays.exists() and not meta.exists()
    assert len(list(tmp_path.glob("*.corrupt-*"))) == 2
    assert cache.get_grid(key) is None  # still missing, nothing raised


def test_compute_grid_reuses_complete_grids_and_continues_partial_ones(tmp_path: Path) -> None:
    cache = ProjectionCache(tmp_path)
    ref = ModelRef("prepared", "abc", "original")
    points: JointPoints = collect_points(_captures([4, 6]), max_points=12)
    request = _request(method="pca")
    stops = iter(range(100))
    partial = compute_grid(
        ref, request, cache=cache, points=points, should_stop=lambda: next(stops) >= 3
    )
    assert partial.heads_done == 3
    seen: list[tuple[int, int]] = []
    done = compute_grid(
        ref, request, cache=cache, points=points, on_head=lambda lay, h, _c: seen.append((lay, h))
    )
    assert done.complete and len(seen) == 5
    seen.clear()
    reopened = compute_grid(ref, request, cache=cache, on_head=lambda *a: seen.append(a[:2]))
    assert reopened.complete and seen == []  # from the cache: no points needed, nothing redone
    assert np.array_equal(reopened.coords, done.coords, equal_nan=True)
