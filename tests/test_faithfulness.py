"""Comprehensiveness and sufficiency (ERASER) on a toy classifier whose decisive word is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from test_explain import SENTENCE, WordModel, mixed_predictor, terrible_predictor

import pruning.run_models as run_models
from conftest import real_tokenizer
from pruning.attribution import Attribution, split_words
from pruning.explain import BatchedPredictor, ExplanationCache, explain
from pruning.faithfulness import (
    aopc_ks,
    dataset_faithfulness,
    faithfulness,
    keep_words,
    remove_words,
)
from pruning.jobs import JobCancelled
from pruning.run_models import ModelRef

SIGMOID_4 = 1 / (1 + math.exp(-4.0))


def test_aopc_ks_turns_erasers_bins_into_word_counts() -> None:
    assert aopc_ks(22) == (1, 2, 3, 5, 11)
    assert aopc_ks(100) == (1, 5, 10, 20, 50)
    assert aopc_ks(10) == (1, 2, 5)
    assert aopc_ks(3) == (1, 2)
    assert aopc_ks(1) == (1,)
    assert aopc_ks(7, fractions=(0.5, 1.0)) == (4, 7)
    with pytest.raises(ValueError, match="at least one word"):
        aopc_ks(0)
    with pytest.raises(ValueError, match="Fractions"):
        aopc_ks(5, fractions=(0.0,))


def test_remove_and_keep_words() -> None:
    text = " A terrible  film,\tvery boring. "
    spans = split_words(text)
    assert remove_words(text, spans, {1, 3}) == "A film, boring."
    assert keep_words(text, spans, {3, 1}) == "terrible very"
    assert remove_words(text, spans, set()) == "A terrible film, very boring."
    assert keep_words(text, spans, set()) == ""
    assert remove_words(text, spans, set(range(len(spans)))) == ""


def _with_values(attribution: Attribution, values: list[float]) -> Attribution:
    return Attribution(**{**attribution.__dict__, "values": tuple(values)})


def test_the_decisive_word_gets_maximal_comprehensiveness() -> None:
    predictor = terrible_predictor()
    lime = explain(predictor, SENTENCE, method="lime", samples=200, seed=0)
    calls = predictor.calls
    score = faithfulness(predictor, lime, random_orders=5, seed=0)
    assert predictor.calls == calls + 1  # every perturbed text in one batched call
    assert score.ks == aopc_ks(14) == (1, 2, 3, 7)
    assert score.target == 1 and score.full_probability == pytest.approx(SIGMOID_4)
    # Removing "terrible" takes the model back to 0.5: the largest possible drop.
    assert score.comprehensiveness_at[0] == pytest.approx(SIGMOID_4 - 0.5, abs=1e-9)
    assert score.comprehensiveness == pytest.approx(SIGMOID_4 - 0.5, abs=1e-9)
    # Keeping only "terrible" keeps the whole probability.
    assert score.sufficiency == pytest.approx(0.0, abs=1e-9)
    assert score.random_comprehensiveness < score.comprehensiveness - 0.05
    assert score.random_sufficiency > score.sufficiency + 0.05
    data = score.to_dict()
    assert data["ks"] == [1, 2, 3, 7] and data["comprehensiveness"] == score.comprehensiveness


def test_a_random_attribution_is_less_comprehensive_than_lime() -> None:
    predictor = terrible_predictor()
    lime = explain(predictor, SENTENCE, method="lime", samples=200, seed=0)
    rng = np.random.default_rng(0)
    lime_score = faithfulness(predictor, lime).comprehensiveness
    random_scores = [
        faithfulness(predictor, _with_values(lime, list(rng.normal(size=14)))).comprehensiveness
        for _ in range(5)
    ]
    assert max(random_scores) <= lime_score + 1e-12
    assert np.mean(random_scores) < lime_score - 0.05
    # A reversed ranking (the decisive word last) is the least comprehensive of all.
    worst = faithfulness(predictor, _with_values(lime, [-v for v in lime.values]))
    assert worst.comprehensiveness_at[0] == pytest.approx(0.0, abs=1e-9)


def test_explicit_ks_and_no_random_baseline() -> None:
    predictor = mixed_predictor()
    shap = explain(predictor, SENTENCE, method="shap", samples=60)
    score = faithfulness(predictor, shap, ks=[1, 100], random_orders=0)
    assert score.ks == (1, 14) and math.isnan(score.random_comprehensiveness)
    # k = every word: removing all leaves "" (p = 0.5); keeping all is the full text.
    assert score.sufficiency_at[1] == pytest.approx(0.0, abs=1e-12)
    empty = BatchedPredictor(predictor.model, real_tokenizer())([""])[0, shap.target]
    assert score.comprehensiveness_at[1] == pytest.approx(score.full_probability - empty)


def _fake_load_ref(models: dict[str, WordModel]) -> object:
    def load(ref: ModelRef, **kwargs: object) -> SimpleNamespace:
        return SimpleNamespace(
            model=models[ref.key], tokenizer=real_tokenizer(), label_names=("good", "bad")
        )

    return load


def test_dataset_faithfulness_rows_progress_and_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = {"a" * 16: WordModel({"terrible": 4.0}), "b" * 16: WordModel({"film": -3.0})}
    monkeypatch.setattr(run_models, "load_ref", _fake_load_ref(models))
    refs = [ModelRef("prepared", "a" * 16, "original"), ModelRef("run", "b" * 16, "pruned")]
    texts = [SENTENCE, "terrible film", "   ", "a film that is terrible"]
    fractions: list[float] = []
    cache = ExplanationCache()
    rows = dataset_faithfulness(
        refs, texts, methods=["lime", "shap"], samples=30, seed=0, cache=cache,
        on_progress=lambda f, m: fractions.append(f),
    )  # fmt: skip
    assert [(r["model"], r["method"]) for r in rows] == [
        ("original", "lime"), ("original", "shap"), ("pruned", "lime"), ("pruned", "shap"),
    ]  # fmt: skip
    assert all(r["n_texts"] == 3 for r in rows)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    original_lime = rows[0]
    assert original_lime["comprehensiveness_mean"] > original_lime["random_comprehensiveness_mean"]
    assert original_lime["comprehensiveness_std"] >= 0.0 and original_lime["seconds"] > 0
    assert len(list(cache.root.glob("*.json"))) == 2 * 2 * 3
    with pytest.raises(JobCancelled):
        dataset_faithfulness(
            refs, texts, methods=["lime"], samples=30, seed=0, should_stop=lambda: True
        )
    with pytest.raises(ValueError, match="non-empty text"):
        dataset_faithfulness(refs, ["  "], methods=["lime"], samples=30, seed=0)
