"""Preparing a classifier: fine-tune an encoder on a dataset, evaluate it and store it.

:func:`prepare_model` turns an encoder and a dataset into a stored, evaluated classifier in the
model store (:mod:`cache.model_store`), or returns the stored one when it already exists. The
training itself is :func:`pruning.train.fine_tune`.

Measured: the default encoder on Rotten Tomatoes with the default config (319 steps) reaches
83.8% test accuracy (MCC 0.666) in 131 s of training, 142 s in all, on an idle 2-core CPU; on one
H100 83.9% in 29 s (a fresh process, warm-up included).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cache.fingerprints import base_model_fingerprint, spec_to_dict
from cache.model_store import ModelStore, PreparedModel
from pruning.models import ModelSpec, load_classifier
from pruning.train import TrainConfig, TrainEvent, fine_tune

if TYPE_CHECKING:
    from pruning.data import DataSpec, TextSplit

__all__ = ["prepare_model"]

log = logging.getLogger(__name__)


def _evaluate_splits(
    model: nn.Module, tokenizer: Any, splits: Sequence[tuple[str, TextSplit]], max_length: int
) -> dict[str, dict[str, Any]]:
    from pruning.evaluate import evaluate_split

    metrics: dict[str, dict[str, Any]] = {}
    for name, split in splits:
        if len(split.texts) == 0:
            log.warning("the %s split is empty; no %s metrics", name, name)
            continue
        metrics[name] = evaluate_split(model, tokenizer, split, max_length=max_length).to_dict()
    return metrics


def prepare_model(
    model_spec: ModelSpec,
    data_spec: DataSpec,
    config: TrainConfig | None = None,
    *,
    store: ModelStore | None = None,
    device: str | torch.device | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    force: bool = False,
) -> PreparedModel:
    """Fine-tune ``model_spec`` on ``data_spec``'s train split, evaluate it and store it.

    The encoder is loaded with the dataset's label names (a fresh classifier head, seeded with
    ``config.seed``, when the checkpoint has none of that size), fine-tuned with
    :func:`pruning.train.fine_tune`, evaluated on the validation and test splits, and saved in the
    model store. When the store already holds an entry for the same base model, data, config and
    labels it is returned at once without training (unless ``force``).

    Args:
        model_spec: the base encoder (default, local folder or hub id).
        data_spec: the dataset and its split.
        config: fine-tuning hyper-parameters (default :class:`TrainConfig`).
        store: the model store (default: the one under ``$HEADSCOPE_HOME``).
        device: where to train; ``None`` picks CUDA, MPS or CPU.
        on_event: training progress callback (see :func:`pruning.train.fine_tune`).
        should_stop: cancellation poll; when it fires nothing is stored and
            :class:`pruning.jobs.JobCancelled` is raised.
        force: retrain and overwrite an existing entry.

    Raises:
        ValueError / FileNotFoundError: bad model or data (messages say how to fix them).
        pruning.jobs.JobCancelled: when ``should_stop`` ended the training.
    """
    from pruning.data import load_dataset
    from pruning.jobs import JobCancelled

    config = config or TrainConfig()
    store = store or ModelStore()
    started = time.perf_counter()
    dataset = load_dataset(data_spec)
    base_fingerprint = base_model_fingerprint(model_spec)
    key = store.key_for(base_fingerprint, dataset.fingerprint, config, dataset.label_names)
    if not force:
        cached = store.get(key)
        if cached is not None:
            log.info("prepared model %s found in the store; not training", key)
            return cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        loaded = load_classifier(model_spec, label_names=dataset.label_names, device=device)
    report = fine_tune(
        loaded.model,
        loaded.tokenizer,
        dataset.train,
        config,
        on_event=on_event,
        should_stop=should_stop,
    )
    if report.stopped:
        raise JobCancelled(f"training stopped after {report.steps} of {report.total_steps} steps")
    metrics = _evaluate_splits(
        loaded.model,
        loaded.tokenizer,
        [("validation", dataset.validation), ("test", dataset.test)],
        config.max_length,
    )
    info = {
        "model_spec": spec_to_dict(model_spec),
        "model_label": model_spec.label,
        "base_fingerprint": base_fingerprint,
        "data_spec": spec_to_dict(data_spec),
        "data_name": dataset.name,
        "data_description": dataset.description,
        "data_fingerprint": dataset.fingerprint,
        "split_sizes": {
            "train": len(dataset.train),
            "validation": len(dataset.validation),
            "test": len(dataset.test),
        },
        "train_config": config.to_dict(),
        "train": report.to_dict(),
        "train_seconds": report.seconds,
        "total_seconds": time.perf_counter() - started,
        "device": str(next(loaded.model.parameters()).device),
    }
    return store.save(key, loaded.model, loaded.tokenizer, metrics=metrics, info=info)
