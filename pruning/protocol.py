"""The "prune before fine-tuning" protocol (the MCAP paper's): start from the base encoder, prune,
then fine-tune the pruned model exactly as the prepared classifier was fine-tuned.

:func:`load_encoder` gives the encoder with the same fresh classifier head the preparation started
from; :func:`fine_tune_pruned` trains a pruned model with the prepared classifier's own training
config. With every head kept, the two retrace the preparation exactly, so a comparison with the
prepared (unpruned, fine-tuned) classifier measures the pruning and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cache.model_store import PreparedModel
from pruning.data import LabelledDataset
from pruning.jobs import JobCancelled
from pruning.models import LoadedClassifier, ModelSpec, load_classifier
from pruning.train import TrainConfig, fine_tune


def prepared_train_config(prepared: PreparedModel) -> TrainConfig:
    """The training config the prepared classifier was fine-tuned with."""
    return TrainConfig.from_dict(dict(prepared.info.get("train_config", {})))


def load_encoder(
    model: ModelSpec, prepared: PreparedModel, dataset: LabelledDataset
) -> LoadedClassifier:
    """The base encoder with a fresh classifier head for ``dataset``'s classes, on the CPU.

    The head is drawn under the prepared classifier's training seed, as the preparation drew it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(prepared_train_config(prepared).seed)
        return load_classifier(model, label_names=dataset.label_names)


def fine_tune_pruned(
    pruned: nn.Module,
    tokenizer: Any,
    dataset: LabelledDataset,
    prepared: PreparedModel,
    *,
    device: torch.device,
    weight_masks: dict[str, torch.Tensor] | None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fine-tune a model pruned before fine-tuning, IN PLACE, as the prepared classifier was.

    Same training config (epochs, rate, batch size, seed) as the prepared classifier's; weight
    masks stay applied (pruned weights stay exactly zero). ``on_progress(fraction, message)``
    follows the training steps.

    Returns:
        ``{"config": the training config, "report": the training report}`` (JSON-ready).

    Raises:
        pruning.jobs.JobCancelled: when ``should_stop`` ended the training.
    """
    config = prepared_train_config(prepared)

    def on_train(event: Any) -> None:
        if on_progress is not None:
            on_progress(
                event.fraction,
                f"fine-tuning step {event.step}/{event.total_steps} · loss {event.loss:.3f}",
            )

    report = fine_tune(
        pruned,
        tokenizer,
        dataset.train,
        config,
        device=device,
        on_event=on_train,
        should_stop=should_stop,
        weight_masks=weight_masks,
    )
    if report.stopped:
        raise JobCancelled(f"fine-tuning stopped after {report.steps} of {report.total_steps}")
    return {"config": config.to_dict(), "report": report.to_dict()}
