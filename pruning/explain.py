"""LIME and SHAP word attributions of a classifier's prediction, with a batched predict function.

* :func:`explain` explains one text with one method on one model through a
  :class:`~pruning.predictor.BatchedPredictor` and returns an :class:`Attribution` (one signed
  value per word of :func:`split_words`, toward a target class).
* :func:`explain_models` explains the same text on several models (the original and pruned runs)
  toward one target, so their values can be compared word by word; results are cached as JSON
  under ``$HEADSCOPE_HOME/explanations`` (:mod:`pruning.explain_cache`).
* :func:`agreement` / :func:`seed_stability` compare attributions (:mod:`pruning.attribution`).

LIME: Ribeiro, Singh and Guestrin, "Why Should I Trust You?: Explaining the Predictions of Any
Classifier", KDD 2016, https://arxiv.org/abs/1602.04938. SHAP: Lundberg and Lee, "A Unified
Approach to Interpreting Model Predictions", NeurIPS 2017, https://arxiv.org/abs/1705.07874
(here its partition explainer, which computes Owen values over a word hierarchy).

What is shared between models explained with the same settings:

* LIME: everything random. ``LimeTextExplainer(random_state=seed)`` draws the perturbations
  (which words each of the ``samples`` texts drops) from the seed and the number of words only,
  so every model sees exactly the same perturbed texts; only the model's answers differ.
* SHAP: the word segmentation, the partition tree over the words (built from the text alone),
  the all-removed base text, the budget (``max_evals``) and the random numbers that break ties in
  the explainer's priority queue (numpy's global generator, seeded for the call and restored
  after). Which coalitions are evaluated under the budget is *not* shared: the partition explainer
  expands first the clusters where this model's output changes most. With a budget large enough
  to expand the whole tree the values are exact Owen values for every model.

Identical (model, text, method, samples, seed, target) give identical values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pruning.attribution import Attribution, agreement, join_words, seed_stability, split_words
from pruning.explain_cache import ExplanationCache, explanation_key
from pruning.predictor import BatchedPredictor
from pruning.run_models import ModelRef, load_ref, ref_fingerprint

if TYPE_CHECKING:
    from pruning.models import LoadedClassifier

__all__ = [
    "METHODS",
    "Attribution",
    "BatchedPredictor",
    "ExplainMethod",
    "ExplanationCache",
    "agreement",
    "explain",
    "explain_models",
    "explanation_key",
    "seed_stability",
    "split_words",
]

ExplainMethod = Literal["lime", "shap"]
METHODS: tuple[ExplainMethod, ...] = ("lime", "shap")
MIN_SAMPLES = 10
# Texts per call of the model inside SHAP's partition explainer. Part of the algorithm: the
# explainer picks the next coalitions between batches, so another size gives other values.
SHAP_BATCH = 32

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


def _normalise(text: str) -> str:
    """LIME's and SHAP's perturbed strings as model input: words joined by single spaces."""
    return " ".join(text.split())


class _WordTokenizer:
    """The :func:`split_words` words in the form ``shap.maskers.Text`` expects of a tokenizer.

    The words are framed by two empty marker tokens, as ``[CLS]``/``[SEP]`` frame a BERT input:
    SHAP reads ``tokenizer("")`` (two tokens) as one kept prefix and one kept suffix token, never
    masks them, and the leading/trailing whitespace lives in their segments.
    """

    def __call__(self, text: str, return_offsets_mapping: bool = True) -> dict[str, Any]:
        spans = split_words(text)
        out: dict[str, Any] = {"input_ids": ["", *(text[a:b] for a, b in spans), ""]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(0, 0), *spans, (len(text), len(text))]
        return out


def shap_masker() -> Any:
    """The ``shap.maskers.Text`` over :func:`split_words` words; a masked word is deleted."""
    import shap

    return shap.maskers.Text(_WordTokenizer(), mask_token=" ", collapse_mask_token=True)


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (SHAP draws from it) and restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def _check_settings(method: str, samples: int, n_classes: int, target: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown explanation method {method!r}; use 'lime' or 'shap'.")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_SAMPLES:
        raise ValueError(f"samples must be an integer >= {MIN_SAMPLES} (got {samples!r}).")
    if target is not None and not 0 <= target < n_classes:
        raise ValueError(f"target must be a class id in 0..{n_classes - 1} (got {target}).")


def text_words(text: str) -> list[tuple[int, int]]:
    """The word spans of ``text``.

    Raises:
        ValueError: the text is empty or whitespace only.
    """
    spans = split_words(text) if isinstance(text, str) else []
    if not spans:
        raise ValueError("The text is empty; type a sentence to explain.")
    return spans


def explain(
    predictor: BatchedPredictor,
    text: str,
    *,
    method: ExplainMethod,
    target: int | None = None,
    samples: int = 1000,
    seed: int = 0,
    model_label: str = "",
    model_key: str = "",
    label_names: tuple[str, ...] = (),
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Attribution:
    """Explain the model's prediction on ``text`` with LIME or SHAP.

    Args:
        predictor: the model's batched probability function.
        text: the text; at least one word.
        method: ``"lime"`` (``samples`` perturbed texts, a weighted ridge fit over every word) or
            ``"shap"`` (partition explainer, ``max_evals=samples``).
        target: the class to explain; ``None`` = the class the model predicts for ``text``.
        samples: LIME samples / SHAP evaluations (>= 10).
        seed: LIME's ``random_state``; seeds SHAP's tie-breaking.
        model_label, model_key, label_names: carried into the result.
        on_progress: ``on_progress(fraction, message)``, fractions non-decreasing in [0, 1].
        should_stop: checked between model batches; raises ``JobCancelled`` when True.

    Raises:
        ValueError: empty text, unknown method, too few samples or a target out of range.
    """
    spans = text_words(text)
    _check_settings(method, samples, 2, None)
    started = time.perf_counter()
    full = join_words(text, spans, range(len(spans)))
    probabilities = predictor([full], should_stop=should_stop)[0]
    n_classes = int(probabilities.shape[0])
    _check_settings(method, samples, n_classes, target)
    chosen = int(np.argmax(probabilities)) if target is None else int(target)
    names = tuple(label_names) or tuple(f"LABEL_{i}" for i in range(n_classes))
    last = 0.0

    def report(fraction: float, message: str) -> None:
        nonlocal last
        last = max(last, min(1.0, fraction))
        if on_progress is not None:
            on_progress(last, message)

    report(0.0, f"{method.upper()}: {samples} samples")
    seen = 0

    def predict(texts: Sequence[str]) -> np.ndarray:
        nonlocal seen
        batch = [_normalise(str(t)) for t in texts]
        before = seen

        def on_batch(done: int, total: int) -> None:
            share = (before + len(batch) * done / max(1, total)) / samples
            report(0.99 * share, f"{method.upper()}: {before + done} of ~{samples} texts")

        result = predictor(batch, on_batch=on_batch, should_stop=should_stop)
        seen += len(batch)
        return result

    if method == "lime":
        values, base = _lime_values(predict, text, len(spans), chosen, samples, seed, names)
    else:
        values, base = _shap_values(predict, text, len(spans), chosen, samples, seed)
    report(1.0, f"{method.upper()}: done")
    return Attribution(
        method=method,
        model_label=model_label,
        model_key=model_key,
        text=text,
        words=tuple(text[a:b] for a, b in spans),
        spans=tuple(spans),
        values=tuple(float(v) for v in values),
        target=chosen,
        label_names=names,
        probabilities=tuple(float(p) for p in probabilities),
        samples=samples,
        seed=seed,
        seconds=time.perf_counter() - started,
        base_value=None if base is None else float(base),
    )


def _lime_values(
    predict: Callable[[Sequence[str]], np.ndarray],
    text: str,
    n_words: int,
    target: int,
    samples: int,
    seed: int,
    names: tuple[str, ...],
) -> tuple[np.ndarray, float | None]:
    from lime.lime_text import LimeTextExplainer

    explainer = LimeTextExplainer(
        class_names=list(names),
        split_expression=lambda raw: [raw[a:b] for a, b in split_words(raw)],
        bow=False,
        mask_string="",
        feature_selection="none",
        random_state=seed,
    )
    explanation = explainer.explain_instance(
        text,
        predict,
        labels=(target,),
        num_features=n_words,
        num_samples=samples,
    )
    values = np.zeros(n_words, dtype=np.float64)
    # With bow=False LIME numbers the features by word position, in text order.
    for feature, weight in explanation.local_exp[target]:
        values[int(feature)] = float(weight)
    intercept = explanation.intercept.get(target)
    return values, None if intercept is None else float(intercept)


def _shap_values(
    predict: Callable[[Sequence[str]], np.ndarray],
    text: str,
    n_words: int,
    target: int,
    samples: int,
    seed: int,
) -> tuple[np.ndarray, float | None]:
    import shap

    def predict_array(texts: Any) -> np.ndarray:
        return predict([str(t) for t in np.asarray(texts).reshape(-1)])

    explainer = shap.Explainer(predict_array, shap_masker(), algorithm="partition")
    with _seeded_numpy(seed):
        explanation = explainer([text], max_evals=samples, batch_size=SHAP_BATCH, silent=True)
    # Rows: the empty prefix marker, one per word, the empty suffix marker.
    rows = np.asarray(explanation.values[0], dtype=np.float64)
    if rows.shape[0] != n_words + 2:
        raise RuntimeError(f"SHAP returned {rows.shape[0] - 2} word values for {n_words} words.")
    base = np.asarray(explanation.base_values[0], dtype=np.float64).reshape(-1)
    return rows[1:-1, target], float(base[target]) if base.size > target else None


def _loaded_for(
    ref: ModelRef, loaded: Mapping[str, LoadedClassifier] | None, device: Any
) -> tuple[LoadedClassifier, bool]:
    """The classifier of ``ref`` (from ``loaded`` by fingerprint or key); True if loaded here."""
    if loaded is not None:
        for name in (ref_fingerprint(ref), ref.key):
            if name in loaded:
                return loaded[name], False
    return load_ref(ref, device=device), True


def explain_models(
    refs: Sequence[ModelRef],
    text: str,
    *,
    methods: Sequence[ExplainMethod],
    samples: int,
    seed: int,
    target: int | None = None,
    device: Any = None,
    cache: ExplanationCache | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    loaded: Mapping[str, LoadedClassifier] | None = None,
) -> list[Attribution]:
    """Explain ``text`` on every model with every method, toward one shared target.

    ``target=None`` uses the class the FIRST model predicts for every model, so the values of
    all models answer the same question ("what supports class t?") and can be compared word by
    word; each attribution still carries its own model's probabilities. Results come back in
    ``refs`` order, the methods in the order given within each model. Cached explanations are
    returned without loading the model; new ones are stored in ``cache``.

    Args:
        refs: the models (e.g. :func:`pruning.run_models.model_refs`).
        methods: ``"lime"`` and/or ``"shap"``.
        device: where models are loaded (``None`` picks CUDA, MPS or CPU).
        cache: where explanations are looked up and stored (``None``: no caching).
        on_progress: ``on_progress(fraction, message)``, fractions non-decreasing.
        should_stop: polled between model batches; cancellation raises ``JobCancelled``.
        loaded: already loaded classifiers by ``ref_fingerprint(ref)`` (or by ``ref.key``);
            these are used instead of loading from the stores.

    Raises:
        ValueError: no models or methods, empty text, bad settings, or models whose classes
            differ (their values toward one target would not be comparable).
        pruning.jobs.JobCancelled: when ``should_stop`` fired.
    """
    from pruning.jobs import JobCancelled

    text_words(text)
    chosen_methods = list(dict.fromkeys(methods))
    if not refs or not chosen_methods:
        raise ValueError("Choose at least one model and one method (lime or shap) to explain.")
    for method in chosen_methods:
        _check_settings(method, samples, 2, None)
    total = len(refs) * len(chosen_methods)
    last = 0.0

    def report(fraction: float, message: str) -> None:
        nonlocal last
        last = max(last, min(1.0, fraction))
        if on_progress is not None:
            on_progress(last, message)

    def check() -> None:
        if should_stop is not None and should_stop():
            raise JobCancelled()

    def cached(ref: ModelRef, method: str, wanted: int | None) -> Attribution | None:
        if cache is None:
            return None
        hit = cache.get(explanation_key(ref, text, method, samples, seed, wanted))
        # A run may have been renamed since: show today's label.
        return None if hit is None else dataclasses.replace(hit, model_label=ref.label)

    shared = target
    if shared is None:
        # The first model's own-prediction entries remember which class it predicted.
        firsts = (cached(refs[0], m, None) for m in chosen_methods)
        shared = next((hit.target for hit in firsts if hit is not None), None)
    results: list[Attribution] = []
    names: tuple[str, ...] | None = None
    report(0.0, "starting")
    for index, ref in enumerate(refs):
        check()
        base = index * len(chosen_methods)
        hits = {m: cached(ref, m, shared) for m in chosen_methods} if shared is not None else {}
        model: LoadedClassifier | None = None
        owned = False
        if any(hits.get(m) is None for m in chosen_methods):
            report(base / total, f"loading {ref.label}")
            model, owned = _loaded_for(ref, loaded, device)
        predictor = None if model is None else BatchedPredictor(model.model, model.tokenizer)
        for offset, method in enumerate(chosen_methods):
            check()
            result = hits.get(method)
            if result is None:
                assert model is not None and predictor is not None  # loaded when a hit is missing
                step = base + offset

                def inner(
                    fraction: float, message: str, step: int = step, label: str = ref.label
                ) -> None:
                    report((step + fraction) / total, f"{label}: {message}")

                result = explain(
                    predictor,
                    text,
                    method=method,
                    target=shared,
                    samples=samples,
                    seed=seed,
                    model_label=ref.label,
                    model_key=ref_fingerprint(ref),
                    label_names=tuple(model.label_names),
                    on_progress=inner,
                    should_stop=should_stop,
                )
                if shared is None:
                    shared = result.target
                if cache is not None:
                    cache.put(explanation_key(ref, text, method, samples, seed, shared), result)
                    if index == 0 and target is None:
                        cache.put(explanation_key(ref, text, method, samples, seed, None), result)
            if names is not None and result.label_names != names:
                raise ValueError(
                    f"{ref.label} predicts {list(result.label_names)} but {refs[0].label} "
                    f"predicts {list(names)}; compare models prepared for the same classes."
                )
            names = result.label_names
            results.append(result)
            report((base + offset + 1) / total, f"{ref.label}: {method.upper()} done")
        if owned:
            del model, predictor
    return results
