"""MCAP's pattern set: the generator's five patterns, the rule labeller, the pattern CNN."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pruning.methods.mcap_pattern_cnn import (
    confusion_matrix,
    holdout_mask,
    label_model_maps,
    train_pattern_cnn,
)
from pruning.methods.mcap_patterns import (
    MIN_LENGTH,
    PATTERNS,
    generate_pattern_map,
    generate_pattern_set,
    label_maps,
    map_structure,
    pattern_input,
)

PER_PATTERN = 40


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokens(length: int, seps: list[int]) -> tuple[str, ...]:
    return tuple("[CLS]" if i == 0 else "[SEP]" if i in seps else f"w{i}" for i in range(length))


def _label(attention: np.ndarray, tokens: tuple[str, ...]) -> str | None:
    label = int(label_maps(map_structure(attention, tokens), len(tokens)))
    return None if label < 0 else PATTERNS[label]


# Independent measures (plain numpy, not map_structure) of what each pattern should look like.


def _special_share(attention: np.ndarray, tokens: tuple[str, ...]) -> float:
    columns = [i for i, t in enumerate(tokens) if t in ("[CLS]", "[SEP]")]
    return float(attention[:, columns].sum(axis=1).mean())


def _band_share(attention: np.ndarray) -> float:
    i, j = np.indices(attention.shape)
    return float((attention * (abs(i - j) <= 1)).sum(axis=1).mean())


def _top_columns_share(attention: np.ndarray) -> float:
    return float(np.sort(attention.mean(axis=0))[-2:].sum())


def _block_diagonal_share(attention: np.ndarray, tokens: tuple[str, ...]) -> float:
    """Mean share of a sentence token's attention that stays inside its own sentence."""
    seps = [i for i, t in enumerate(tokens) if t == "[SEP]"]
    starts = [1, *(s + 1 for s in seps[:-1])]
    shares = [
        attention[q, start:end].sum()
        for start, end in zip(starts, seps, strict=True)
        for q in range(start, end)
    ]
    return float(np.mean(shares))


def _generated(pattern: str, count: int = 30, seed: int = 0) -> list[tuple[np.ndarray, tuple]]:
    generator = torch.Generator().manual_seed(seed)
    maps = [generate_pattern_map(pattern, generator) for _ in range(count)]
    return [(m.attention.double().numpy(), m.tokens) for m in maps]


def test_generated_maps_are_row_stochastic_seeded_and_labelled() -> None:
    for index, pattern in enumerate(PATTERNS):
        generator = torch.Generator().manual_seed(3)
        first = generate_pattern_map(pattern, generator)
        again = generate_pattern_map(pattern, torch.Generator().manual_seed(3))
        assert torch.equal(first.attention, again.attention) and first.tokens == again.tokens
        assert first.pattern == index and first.tokens[0] == "[CLS]"
        assert first.tokens[-1] == "[SEP]" and MIN_LENGTH <= len(first.tokens) <= 64
        torch.testing.assert_close(first.attention.sum(dim=1), torch.ones(len(first.tokens)))
        assert bool((first.attention >= 0).all())
    with pytest.raises(ValueError, match="Unknown pattern 'stripes'"):
        generate_pattern_map("stripes", torch.Generator())
    with pytest.raises(ValueError, match="A block map needs at least 27 tokens"):
        generate_pattern_map("block", torch.Generator(), length=20)


def test_vertical_maps_put_their_mass_on_the_special_columns() -> None:
    for attention, tokens in _generated("vertical"):
        assert _special_share(attention, tokens) >= 0.7
        assert _top_columns_share(attention) >= 0.5  # a few columns hold the mass
        assert _band_share(attention) < 0.2


def test_diagonal_maps_put_their_mass_next_to_the_diagonal() -> None:
    for attention, tokens in _generated("diagonal"):
        assert _band_share(attention) >= 0.7
        assert _special_share(attention, tokens) < 0.2 and _top_columns_share(attention) < 0.2


def test_vertical_plus_diagonal_maps_have_both() -> None:
    for attention, tokens in _generated("vertical+diagonal"):
        special, band = _special_share(attention, tokens), _band_share(attention)
        assert special >= 0.3 and band >= 0.3 and special + band >= 0.75


def test_block_maps_keep_attention_inside_each_sentence() -> None:
    for attention, tokens in _generated("block"):
        assert tokens.count("[SEP]") == 2  # a sentence pair
        assert _block_diagonal_share(attention, tokens) >= 0.75
        assert _special_share(attention, tokens) < 0.1 and _band_share(attention) < 0.3


def test_heterogeneous_maps_have_no_shared_structure() -> None:
    for attention, tokens in _generated("heterogeneous"):
        assert _special_share(attention, tokens) < 0.25 and _band_share(attention) < 0.25
        assert _top_columns_share(attention) < 0.25
        # Rows differ: no two rows put their largest weight on the same key more than rarely.
        peaks = attention.argmax(axis=1)
        assert np.bincount(peaks).max() <= max(4, len(tokens) // 4)


def test_the_rule_labeller_recovers_the_generator_s_patterns() -> None:
    for pattern in PATTERNS:
        labels = [_label(attention, tokens) for attention, tokens in _generated(pattern, 40, 1)]
        assert labels.count(pattern) >= 36, (pattern, labels)


def test_the_rule_labeller_on_hand_made_maps() -> None:
    t = 20
    single = _tokens(t, [t - 1])
    vertical = np.zeros((t, t))
    vertical[:, 0], vertical[:, t - 1] = 0.3, 0.7
    assert _label(vertical, single) == "vertical"
    previous = np.eye(t, k=-1)
    previous[0, 0] = 1.0
    assert _label(previous, single) == "diagonal"
    assert _label(0.5 * vertical + 0.5 * np.eye(t), single) == "vertical+diagonal"
    uniform = np.full((t, t), 1.0 / t)
    assert _label(uniform, single) == "heterogeneous"
    # A pair: [CLS] 14 words [SEP] 14 words [SEP]; attention stays in each sentence.
    n = 31
    pair = _tokens(n, [15, 30])
    block = np.full((n, n), 1e-6)
    block[1:15, 1:15] = 1.0
    block[16:30, 16:30] = 1.0
    block /= block.sum(axis=1, keepdims=True)
    assert _label(block, pair) == "block"
    assert _label(np.full((n, n), 1.0 / n), pair) == "heterogeneous"  # no own-sentence bias
    # One sentence in two blocks: the labeller finds the cut (between tokens 14 and 16).
    assert _label(block, _tokens(n, [30])) == "block"
    structure = map_structure(block, _tokens(n, [30]))
    assert structure["cross"] < 0.05 and structure["own"] > 0.9  # token 15 spreads evenly
    stripe = np.full((t, t), 0.2 / t)
    stripe[:, 7] += 0.8  # a stripe on an ordinary token: no rule fits
    assert _label(stripe, single) is None
    assert _label(0.4 * vertical + 0.6 * uniform, single) is None  # between the rules
    short = _tokens(MIN_LENGTH - 1, [MIN_LENGTH - 2])
    assert _label(np.full((MIN_LENGTH - 1,) * 2, 1 / (MIN_LENGTH - 1)), short) is None


def test_map_structure_measures_a_uniform_map_exactly() -> None:
    t = 20
    structure = map_structure(np.full((2, 3, t, t), 1.0 / t), _tokens(t, [9, t - 1]))
    assert structure["cls"].shape == (2, 3)
    np.testing.assert_allclose(structure["cls"], 1 / t)
    np.testing.assert_allclose(structure["sep"], 2 / t)
    np.testing.assert_allclose(structure["diagonal"], 3 / t)
    np.testing.assert_allclose(structure["columns"], 2 / t)
    np.testing.assert_allclose(structure["own"], (8 * 8 + 9 * 9) / 17 / t)
    np.testing.assert_allclose(structure["cross"], 1.0)  # a uniform row has no own-bias
    assert (structure["sentences"] == 2).all()
    one = map_structure(np.full((t, t), 1.0 / t), _tokens(t, [t - 1]))
    assert one["cls"].shape == () and float(one["cross"]) == pytest.approx(1.0)
    short = map_structure(np.full((11, 11), 1.0 / 11), _tokens(11, [10]))  # 9 words: no cut
    assert np.isnan(short["own"]) and np.isnan(short["cross"])


def test_label_model_maps_labels_every_head_and_resizes_for_the_cnn() -> None:
    t = 20
    vertical = np.zeros((t, t))
    vertical[:, 0] = vertical[:, t - 1] = 0.5
    uniform = np.full((t, t), 1.0 / t)
    attentions = torch.tensor(np.stack([np.stack([vertical, uniform])]), dtype=torch.float32)
    labelled = label_model_maps([attentions], [_tokens(t, [t - 1])], 8)
    assert labelled.maps.shape == (1, 2, 8, 8) and labelled.labels.tolist() == [[0, 4]]
    torch.testing.assert_close(labelled.maps.sum(dim=-1), torch.full((1, 2, 8), 8.0))
    with pytest.raises(ValueError, match="has 3 tokens but maps of 20"):
        label_model_maps([attentions], [("a", "b", "c")], 8)


def test_holdout_keeps_groups_together_and_both_parts_non_empty() -> None:
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    test = holdout_mask(groups, 0.4, torch.Generator().manual_seed(0))
    held = set(groups[test].tolist())
    assert len(held) == 2 and not held & set(groups[~test].tolist())
    assert int(holdout_mask(groups, 0.99, torch.Generator()).sum()) == 8  # one group stays
    assert not holdout_mask(torch.tensor([5, 5]), 0.5, torch.Generator()).any()


def test_confusion_matrix_counts_true_rows_and_predicted_columns() -> None:
    true = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(true, predicted, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_the_cnn_learns_the_patterns_well_above_chance_in_seconds() -> None:
    maps, labels, generated = generate_pattern_set(PER_PATTERN, 8, torch.Generator().manual_seed(0))
    assert maps.shape == (5 * PER_PATTERN, 8, 8) and len(generated) == 5 * PER_PATTERN
    assert labels.tolist() == [p for p in range(5) for _ in range(PER_PATTERN)]
    torch.testing.assert_close(maps, pattern_input(maps))  # already CNN inputs
    sources = ["generated"] * len(labels)
    cnn, report = train_pattern_cnn(
        maps, labels, sources, torch.arange(len(labels)), epochs=10, test_share=0.2, seed=0
    )
    assert report.test_counts["generated"] == [8] * 5  # 20% of each pattern held out
    assert report.train_counts["generated"] == [32] * 5 and report.test_counts["model"] == [0] * 5
    assert sum(map(sum, report.confusion)) == 40
    assert report.accuracy >= 0.6, report  # chance is 0.2
    assert report.accuracy_by_source == {"generated": report.accuracy, "model": None}
    assert report.losses[-1] < report.losses[0] and len(report.losses) == 10
    assert not any(p.requires_grad for p in cnn.parameters()) and not cnn.training
    payload = report.to_dict()
    assert payload["classes"] == list(PATTERNS) and payload["epochs"] == 10
    with pytest.raises(ValueError, match="Unknown map sources"):
        train_pattern_cnn(maps, labels, ["web"] * len(labels), labels, epochs=1, test_share=0.2,
                          seed=0)  # fmt: skip
