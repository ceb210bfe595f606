"""The shared verdict rules of every claim bench, on hand-made numbers."""

from __future__ import annotations

import pytest

from pruning.claim_rules import (
    DOES_NOT_HOLD,
    HOLDS,
    UNCLEAR,
    combine,
    holds_flag,
    paired,
    paired_verdict,
    tie_verdict,
    trials_verdict,
)


def test_paired_verdict_needs_three_seeds_one_sign_and_a_mean_beyond_two_sd() -> None:
    assert paired_verdict([0.02, 0.021, 0.019])[0] == HOLDS
    assert paired_verdict([-0.02, -0.021, -0.019])[0] == DOES_NOT_HOLD
    assert paired_verdict([0.05, 0.05])[0] == UNCLEAR  # two seeds never decide
    verdict, reason = paired_verdict([0.03, -0.001, 0.02])
    assert verdict == UNCLEAR and "change sign" in reason
    verdict, reason = paired_verdict([0.001, 0.03, 0.06])  # all positive, mean 0.030 < 2 sd 0.059
    assert verdict == UNCLEAR and "<= 2 sd" in reason


def test_paired_pairs_by_shared_seed_and_flips_the_sign_for_lower_is_better() -> None:
    result = paired({0: 0.9, 1: 0.8, 2: 0.7, 5: 0.1}, {0: 0.5, 1: 0.4, 2: 0.35, 3: 0.0})
    assert result["seeds"] == [0, 1, 2] and result["verdict"] == HOLDS
    assert result["differences"] == pytest.approx([0.4, 0.4, 0.35])
    loss = paired({0: 0.30, 1: 0.31, 2: 0.29}, {0: 0.40, 1: 0.41, 2: 0.40}, higher_is_better=False)
    assert loss["verdict"] == HOLDS and loss["mean"] > 0
    none = paired({0: 1.0}, {1: 0.0})
    assert none["verdict"] == UNCLEAR and none["mean"] is None and "no seed" in none["reason"]


def test_trials_verdict_uses_the_share_of_random_trials_at_least_as_good() -> None:
    trials = list(range(100))  # 0..99 heads
    assert trials_verdict(97, trials) == (HOLDS, 0.03)
    assert trials_verdict(50, trials) == (DOES_NOT_HOLD, 0.5)
    assert trials_verdict(80, trials) == (UNCLEAR, 0.2)
    with pytest.raises(ValueError, match="no trials"):
        trials_verdict(3, [])


def test_tie_holds_only_within_the_tolerance_with_no_pair_apart_and_enough_seeds() -> None:
    close = {"a": {0: 0.85, 1: 0.86, 2: 0.84}, "b": {0: 0.851, 1: 0.85, 2: 0.852}}
    assert tie_verdict(close, 0.01)[0] == HOLDS
    apart = {"a": {0: 0.85, 1: 0.86, 2: 0.85}, "b": {0: 0.80, 1: 0.80, 2: 0.81}}
    assert tie_verdict(apart, 0.01)[0] == DOES_NOT_HOLD
    assert tie_verdict(apart, 0.06)[0] == UNCLEAR  # within tolerance, but a pair is told apart
    assert tie_verdict({"a": {0: 0.85}, "b": {0: 0.85}}, 0.01)[0] == UNCLEAR  # one seed
    with pytest.raises(ValueError, match="two strategies"):
        tie_verdict({"a": {0: 0.8}}, 0.01)


def test_combine_and_the_flag() -> None:
    assert combine([]) is None and holds_flag(None) is None
    assert combine([HOLDS, HOLDS]) == HOLDS and holds_flag(HOLDS) is True
    assert combine([HOLDS, UNCLEAR]) == UNCLEAR and holds_flag(UNCLEAR) is False
    assert combine([HOLDS, UNCLEAR, DOES_NOT_HOLD]) == DOES_NOT_HOLD
