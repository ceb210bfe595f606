"""Faithfulness of word attributions: comprehensiveness and sufficiency (ERASER).

DeYoung, Jain, Rajani, Lehman, Xiong, Socher and Wallace, "ERASER: A Benchmark to Evaluate
Rationalized NLP Models", ACL 2020, https://arxiv.org/abs/1911.03429.

For a text x, target class t and the k words an attribution ranks highest (largest signed value
toward t):

* comprehensiveness(k) = p(t | x) - p(t | x without those words): high when the words the
  explanation points at are the ones the model needed;
* sufficiency(k) = p(t | x) - p(t | only those words): low (even negative) when they suffice.

Both are averaged over several k (AOPC, the area over the perturbation curve): ERASER's bins of
1, 5, 10, 20 and 50 % of the words turned into word counts (:func:`aopc_ks`). A random word order
scored the same way is the baseline an explanation must beat. Words are those of
:func:`pruning.attribution.split_words`, the ones LIME and SHAP perturbed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pruning.attribution import Attribution, join_words, split_words, top_k_positions

if TYPE_CHECKING:
    from pruning.explain import ExplainMethod, ExplanationCache
    from pruning.predictor import BatchedPredictor
    from pruning.run_models import ModelRef

__all__ = [
    "AOPC_FRACTIONS",
    "Faithfulness",
    "aopc_ks",
    "dataset_faithfulness",
    "faithfulness",
    "keep_words",
    "remove_words",
]

AOPC_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)


def remove_words(text: str, spans: Sequence[tuple[int, int]], drop: set[int]) -> str:
    """``text`` without the words at positions ``drop``: the others joined by single spaces."""
    return join_words(text, spans, (i for i in range(len(spans)) if i not in drop))


def keep_words(text: str, spans: Sequence[tuple[int, int]], keep: set[int]) -> str:
    """Only the words at positions ``keep``, in text order, joined by single spaces ("" if none)."""
    return join_words(text, spans, keep)


@dataclass(frozen=True)
class Faithfulness:
    """ERASER scores of one attribution (probabilities of ``target``; AOPC = mean over ``ks``).

    Attributes:
        comprehensiveness: AOPC comprehensiveness (higher = more faithful).
        sufficiency: AOPC sufficiency (lower = more faithful).
        ks: the word counts k.
        comprehensiveness_at / sufficiency_at: the score at each k.
        random_comprehensiveness / random_sufficiency: the AOPC of random word orders (mean over
            the seeded orders).
        target: the class whose probability is measured.
        full_probability: p(target | the whole text).
    """

    comprehensiveness: float
    sufficiency: float
    ks: tuple[int, ...]
    comprehensiveness_at: tuple[float, ...]
    sufficiency_at: tuple[float, ...]
    random_comprehensiveness: float
    random_sufficiency: float
    target: int
    full_probability: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = asdict(self)
        for name in ("ks", "comprehensiveness_at", "sufficiency_at"):
            data[name] = list(data[name])
        return data


def aopc_ks(n_words: int, fractions: Sequence[float] = AOPC_FRACTIONS) -> tuple[int, ...]:
    """ERASER's bins as word counts: ``ceil(f * n_words)``, at least 1, at most ``n_words``,
    without repeats, ascending. E.g. 22 words -> (1, 2, 3, 5, 11).

    Raises:
        ValueError: ``n_words < 1`` or a fraction outside (0, 1].
    """
    if n_words < 1:
        raise ValueError("A text needs at least one word for faithfulness scores.")
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"Fractions must lie in (0, 1]; got {list(fractions)}.")
    counts = {min(n_words, max(1, math.ceil(f * n_words - 1e-9))) for f in fractions}
    return tuple(sorted(counts))


def faithfulness(
    predictor: BatchedPredictor,
    attribution: Attribution,
    *,
    ks: Sequence[int] | None = None,
    random_orders: int = 5,
    seed: int = 0,
) -> Faithfulness:
    """Comprehensiveness and sufficiency of ``attribution`` for the model behind ``predictor``.

    Every perturbed text (the ranked and the random orders, all k) goes through the predictor
    in one call.

    Args:
        predictor: the model the attribution explains.
        attribution: its words are ranked by signed value toward ``attribution.target``.
        ks: word counts (default :func:`aopc_ks`); each is clipped to 1..n_words.
        random_orders: seeded random word orders for the baseline (0 = no baseline: NaN).
        seed: seed of the random orders.

    Raises:
        ValueError: no words, or ``random_orders < 0``.
    """
    text, spans = attribution.text, list(attribution.spans)
    n_words = len(spans)
    if n_words == 0:
        raise ValueError("The attribution has no words; explain a non-empty text.")
    if random_orders < 0:
        raise ValueError(f"random_orders must be >= 0 (got {random_orders}).")
    chosen = aopc_ks(n_words) if ks is None else tuple(min(n_words, max(1, int(k))) for k in ks)
    if not chosen:
        raise ValueError("Give at least one k (a number of words).")
    rng = np.random.default_rng(seed)
    orders = [top_k_positions(attribution.values, n_words)]
    orders += [[int(i) for i in rng.permutation(n_words)] for _ in range(random_orders)]
    texts = [keep_words(text, spans, set(range(n_words)))]
    for order in orders:
        for k in chosen:
            top = set(order[:k])
            texts += [remove_words(text, spans, top), keep_words(text, spans, top)]
    probabilities = predictor(texts)[:, attribution.target]
    full = float(probabilities[0])
    drops = full - probabilities[1:].reshape(len(orders), len(chosen), 2)
    comprehensiveness_at = drops[0, :, 0]
    sufficiency_at = drops[0, :, 1]
    random_means = drops[1:].mean(axis=1) if random_orders else None
    return Faithfulness(
        comprehensiveness=float(comprehensiveness_at.mean()),
        sufficiency=float(sufficiency_at.mean()),
        ks=chosen,
        comprehensiveness_at=tuple(float(v) for v in comprehensiveness_at),
        sufficiency_at=tuple(float(v) for v in sufficiency_at),
        random_comprehensiveness=math.nan
        if random_means is None
        else float(random_means[:, 0].mean()),
        random_sufficiency=math.nan if random_means is None else float(random_means[:, 1].mean()),
        target=attribution.target,
        full_probability=full,
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())


def dataset_faithfulness(
    refs: Sequence[ModelRef],
    texts: Sequence[str],
    *,
    methods: Sequence[ExplainMethod],
    samples: int,
    seed: int,
    device: Any = None,
    cache: ExplanationCache | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Comprehensiveness and sufficiency averaged over texts, per (model, method).

    Here every model explains its OWN predicted class on each text: faithfulness asks whether
    the words an explanation names are the ones this model's decision rests on, and a pruned
    model that changed its mind has a different decision to be faithful to. (The shared target
    of :func:`pruning.explain.explain_models` serves comparing values across models instead.)

    Returns:
        One row per model and method, models in ``refs`` order: ``model``, ``model_key``,
        ``method``, ``n_texts`` (texts with at least one word), ``comprehensiveness_mean`` /
        ``_std``, ``sufficiency_mean`` / ``_std``, ``random_comprehensiveness_mean`` / ``_std``,
        ``random_sufficiency_mean`` / ``_std``, ``seconds`` (explanations and scoring; cached
        explanations cost nothing).

    Raises:
        ValueError: no models, methods or non-empty texts.
        pruning.jobs.JobCancelled: when ``should_stop`` fired.
    """
    from pruning.explain import explain, explanation_key
    from pruning.jobs import JobCancelled
    from pruning.predictor import BatchedPredictor
    from pruning.run_models import load_ref, ref_fingerprint

    usable = [text for text in texts if split_words(text)]
    chosen_methods = list(dict.fromkeys(methods))
    if not refs or not chosen_methods or not usable:
        raise ValueError("Give at least one model, one method and one non-empty text.")
    total = len(refs) * len(usable) * len(chosen_methods)
    done = 0
    rows: list[dict[str, Any]] = []
    for ref in refs:
        if should_stop is not None and should_stop():
            raise JobCancelled()
        if on_progress is not None:
            on_progress(done / total, f"loading {ref.label}")
        loaded = load_ref(ref, device=device)
        predictor = BatchedPredictor(loaded.model, loaded.tokenizer)
        scores: dict[str, list[Faithfulness]] = {m: [] for m in chosen_methods}
        seconds = dict.fromkeys(chosen_methods, 0.0)
        for text in usable:
            for method in chosen_methods:
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                started = time.perf_counter()
                key = explanation_key(ref, text, method, samples, seed, None)
                attribution = cache.get(key) if cache is not None else None
                if attribution is None:
                    attribution = explain(
                        predictor,
                        text,
                        method=method,
                        samples=samples,
                        seed=seed,
                        model_label=ref.label,
                        model_key=ref_fingerprint(ref),
                        label_names=tuple(loaded.label_names),
                        should_stop=should_stop,
                    )
                    if cache is not None:
                        cache.put(key, attribution)
                scores[method].append(faithfulness(predictor, attribution, seed=seed))
                seconds[method] += time.perf_counter() - started
                done += 1
                if on_progress is not None:
                    on_progress(done / total, f"{ref.label}: {method.upper()} {done}/{total}")
        for method in chosen_methods:
            row: dict[str, Any] = {
                "model": ref.label,
                "model_key": ref_fingerprint(ref),
                "method": method,
                "n_texts": len(scores[method]),
                "seconds": seconds[method],
            }
            for name in (
                "comprehensiveness",
                "sufficiency",
                "random_comprehensiveness",
                "random_sufficiency",
            ):
                mean, std = _mean_std([getattr(s, name) for s in scores[method]])
                row[f"{name}_mean"], row[f"{name}_std"] = mean, std
            rows.append(row)
        del loaded, predictor
    return rows
