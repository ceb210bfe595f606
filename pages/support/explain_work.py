"""Background work of the Explanations page: explain, seed stability, faithfulness.

Each ``*_work(payload)`` returns the function an executor runs (see :mod:`pruning.jobs`): it
reports progress, stops when asked and returns JSON-ready results (attributions as
``Attribution.to_dict()``), which the page keeps in ``st.session_state``. ``payload`` is the
JSON-ready request; its hash is the job id, so the same request reattaches to its job.
Explanations go through :class:`pruning.explain.ExplanationCache`, so repeating one is instant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pruning.jobs import Progress


def api() -> Any:
    """pruning.explain and pruning.run_models, imported late so the page can report a lack."""
    from pruning import explain, run_models

    return explain, run_models


def faithfulness_api() -> Any:
    """pruning.faithfulness, or None where this installation lacks it."""
    try:
        from pruning import faithfulness
    except ImportError:
        return None
    return faithfulness


def request_id(kind: str, payload: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def refs_of(payload: dict[str, Any]) -> list[Any]:
    model_ref = api()[1].ModelRef
    return [model_ref(kind, key, label) for kind, key, label in payload["refs"]]


def attributions_of(dicts: list[dict[str, Any]]) -> list[Any]:
    return [api()[0].Attribution.from_dict(d) for d in dicts]


def method_groups(payload: dict[str, Any]) -> dict[int, list[str]]:
    """Methods by their sample count: one explain_models call per distinct count."""
    groups: dict[int, list[str]] = {}
    for method in payload["methods"]:
        groups.setdefault(int(payload["samples"][method]), []).append(method)
    return groups


def explain_work(payload: dict[str, Any]) -> Callable[[Progress], dict[str, Any]]:
    """Explain every sentence on every model with every method: the request and JSON dicts."""

    def work(progress: Progress) -> dict[str, Any]:
        explain, _ = api()
        refs, texts, groups = refs_of(payload), payload["texts"], method_groups(payload)
        steps, out = len(texts) * len(groups), []
        for t_index, text in enumerate(texts):
            target = None
            for g_index, (samples, methods) in enumerate(groups.items()):
                step = t_index * len(groups) + g_index

                def on_progress(fraction: float, message: str, step: int = step) -> None:
                    note = f"sentence {step // len(groups) + 1} of {len(texts)} · {message}"
                    progress.update((step + fraction) / steps, note)

                attributions = explain.explain_models(
                    refs,
                    text,
                    methods=methods,
                    samples=samples,
                    seed=int(payload["seed"]),
                    target=target,
                    cache=explain.ExplanationCache(),
                    on_progress=on_progress,
                    should_stop=progress.should_stop,
                )
                target = attributions[0].target
                out += [a.to_dict() for a in attributions]
        return {"request": payload, "attributions": out}

    return work


def stability_work(payload: dict[str, Any]) -> Callable[[Progress], dict[str, Any]]:
    """One model and method on one sentence with three seeds: seed_stability and the values."""

    def work(progress: Progress) -> dict[str, Any]:
        explain, _ = api()
        (ref,) = refs_of(payload)
        seeds = [int(payload["seed"]) + i for i in range(3)]
        attributions = []
        for index, seed in enumerate(seeds):
            attributions += explain.explain_models(
                [ref],
                payload["text"],
                methods=[payload["method"]],
                samples=int(payload["samples"]),
                seed=seed,
                target=int(payload["target"]),
                cache=explain.ExplanationCache(),
                on_progress=lambda f, m, i=index: progress.update(
                    (i + f) / 3, f"seed {i + 1}: {m}"
                ),
                should_stop=progress.should_stop,
            )
        stats = explain.seed_stability(attributions)
        return {"stats": stats, "attributions": [a.to_dict() for a in attributions]}

    return work


def faithfulness_work(payload: dict[str, Any]) -> Callable[[Progress], list[dict[str, Any]]]:
    """Comprehensiveness and sufficiency of each attribution of one sentence (one row each)."""

    def work(progress: Progress) -> list[dict[str, Any]]:
        explain, run_models = api()
        measure = faithfulness_api()
        refs = {run_models.ref_fingerprint(r): r for r in refs_of(payload)}
        attributions = attributions_of(payload["attributions"])
        rows: list[dict[str, Any]] = []
        for key in dict.fromkeys(a.model_key for a in attributions):
            progress.update(len(rows) / len(attributions), f"loading {refs[key].label}")
            loaded = run_models.load_ref(refs[key])
            predictor = explain.BatchedPredictor(loaded.model, loaded.tokenizer)
            for attribution in (a for a in attributions if a.model_key == key):
                progress.check()
                result = measure.faithfulness(predictor, attribution)
                rows.append(
                    {"model": attribution.model_label, "method": attribution.method}
                    | {
                        name: float(getattr(result, name))
                        for name in (
                            "comprehensiveness",
                            "sufficiency",
                            "random_comprehensiveness",
                            "random_sufficiency",
                        )
                    }
                )
                progress.update(len(rows) / len(attributions), f"{attribution.model_label} done")
        return rows

    return work


def dataset_work(payload: dict[str, Any]) -> Callable[[Progress], list[dict[str, Any]]]:
    """Average faithfulness of every model and method over ``payload["texts"]``."""

    def work(progress: Progress) -> list[dict[str, Any]]:
        explain, measure = api()[0], faithfulness_api()
        groups, rows = method_groups(payload), []
        for index, (samples, methods) in enumerate(groups.items()):
            rows += measure.dataset_faithfulness(
                refs_of(payload),
                payload["texts"],
                methods=methods,
                samples=samples,
                seed=int(payload["seed"]),
                cache=explain.ExplanationCache(),
                on_progress=lambda f, m, i=index: progress.update((i + f) / len(groups), m),
                should_stop=progress.should_stop,
            )
        return [dict(row) for row in rows]

    return work
