"""A* candidate evaluations spread over Ray actors (issue #17): :class:`RayMaskEvaluator`.

The search stays on the driver; each call of :meth:`RayMaskEvaluator.evaluate_many` (one A*
iteration's candidates) is spread over ``N`` Ray actors that each hold the model and the tokenised
evaluation set once, inside their own :class:`pruning.fast_eval.FastMaskEvaluator` (anchor cache,
last layer at position 0, stacking on GPUs: everything the local fast engine does).

How the work is shipped and split:

* **Once per evaluator**: the model is written by :func:`pruning.models.save_pruned` (config JSON,
  ``headscope.json``, safetensors weights) and the batches are packed as safetensors; those bytes
  are ``ray.put`` once and every actor rebuilds the model with :func:`pruning.models.load_pruned`
  from them. No Python object of ours is pickled: Ray only moves bytes, JSON text and numpy
  arrays (masks), which is also what lets a remote cluster without a shared file system work.
* **Actors**: ``N = settings.workers`` or one per CPU (per GPU when the model is on CUDA) of the
  cluster (:func:`pruning.executors.cluster_slots`). On CPU each actor asks for one CPU and runs
  ``torch.set_num_threads(1)``; on CUDA each asks for one GPU and holds the model there. Actors
  start on the first evaluation (not in the constructor) and die in :meth:`close`.
* **Balance**: the searches order candidates by layer and the prefix cache makes early-layer
  candidates the costliest (they recompute the most layers), so masks are dealt **round-robin**
  (mask ``i`` to actor ``i mod N``), never in contiguous chunks. On CPU each mask is its own actor
  call (progress and cancellation per mask; the call costs well under a millisecond); on CUDA each
  actor's share goes in four calls so its masks can still be stacked in one forward.
* **Results** come back in the order given; ``on_evaluation(count)`` is called once per mask as the
  results arrive (a ``ray.wait`` loop), so the progress bar moves and a stop request raised from
  it (``JobCancelled``) ends the call; any exception cancels the calls still outstanding.
* **Anchor**: :meth:`set_anchor` is validated on the driver and broadcast to every actor (Ray runs
  one caller's calls on an actor in order, so it precedes the next evaluations), so each keeps the
  prefix cache of the search's current mask. Actors that start later get the anchor at start.
* **Failure**: actors are not restarted; an actor that dies fails the call with a
  ``RuntimeError`` (the search on the driver is cheap to run again, and a restarted actor would
  have lost its cache).

Equality with the local engine: every actor computes exactly what a local
:class:`~pruning.fast_eval.FastMaskEvaluator` with the same anchor computes, so the metric of each
mask is the same number. The one numerical caveat is float rounding: an actor runs one torch
thread (the driver usually several) and on GPUs its stacked groups differ from the local ones, so
logits may differ in the last bits (~1e-6 relative in fp32, more under bf16 autocast); a score
changes only if a prediction sits on a class tie within that rounding.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from pruning.batching import Batch
from pruning.evaluate import model_device
from pruning.executors import ExecutorSettings, cluster_slots, connect
from pruning.fast_eval import SCORE_METRICS, FastMaskEvaluator, checked_bool_mask
from pruning.heads import present_mask
from pruning.models import load_pruned, save_pruned

log = logging.getLogger(__name__)

# Seconds to wait for the actors to start (a Python process each, loading torch and the model).
START_TIMEOUT_S = 600.0
# Seconds close() waits for killed actors to be reported dead.
KILL_WAIT_S = 30.0
# On CUDA, each actor's share of one evaluate_many call goes in this many calls.
GPU_CALLS_PER_ACTOR = 4
_BATCH_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "labels", "indices")


def model_payload(model: nn.Module) -> dict[str, bytes]:
    """The files of ``model`` as written by :func:`pruning.models.save_pruned`, by file name.

    Removed heads are kept removed (``headscope.json`` lists the kept heads).
    """
    with tempfile.TemporaryDirectory(prefix="headscope-ray-") as folder:
        target = Path(folder) / "model"
        save_pruned(model, None, target)
        return {path.name: path.read_bytes() for path in target.iterdir() if path.is_file()}


def model_from_payload(
    files: dict[str, bytes], device: torch.device, attn_implementation: str = "sdpa"
) -> nn.Module:
    """Rebuild the model of :func:`model_payload` on ``device`` (identical logits)."""
    with tempfile.TemporaryDirectory(prefix="headscope-ray-") as folder:
        root = Path(folder)
        for name, content in files.items():
            (root / Path(name).name).write_bytes(content)
        return load_pruned(root, device=device, attn_implementation=attn_implementation).model


def batches_payload(batches: Sequence[Batch]) -> bytes:
    """The batches as one safetensors blob (CPU tensors ``"<i>.<field>"``; None fields left out)."""
    tensors: dict[str, torch.Tensor] = {}
    for index, batch in enumerate(batches):
        for name in _BATCH_FIELDS:
            value = getattr(batch, name)
            if value is not None:
                tensors[f"{index}.{name}"] = value.detach().to("cpu").contiguous()
    return save_tensors(tensors, metadata={"batches": str(len(batches))})


def batches_from_payload(blob: bytes) -> list[Batch]:
    """The batches of :func:`batches_payload`, on CPU, in their original order."""
    tensors = load_tensors(blob)
    count = 1 + max(int(key.split(".", 1)[0]) for key in tensors)
    return [
        Batch(
            tensors[f"{index}.input_ids"],
            tensors[f"{index}.attention_mask"],
            tensors.get(f"{index}.token_type_ids"),
            tensors.get(f"{index}.labels"),
            tensors[f"{index}.indices"],
        )
        for index in range(count)
    ]


class EvaluatorActor:
    """The body of one Ray actor: a :class:`FastMaskEvaluator` built once from shipped bytes.

    Building the evaluator in the constructor is the point of an actor: it runs once per actor
    process (and again only if Ray restarts a crashed actor).

    Args:
        payload: ``{"model": model_payload(...), "batches": batches_payload(...)}`` (Ray passes
            the object put once by the driver).
        options: ``device``, ``attn_implementation``, ``metric``, ``amp``, ``masks_per_forward``,
            ``cache_bytes`` and ``anchor`` (the driver's anchor, nested lists of bool).
    """

    def __init__(self, payload: dict[str, Any], options: dict[str, Any]) -> None:
        device = torch.device(options["device"])
        if device.type == "cpu":
            torch.set_num_threads(1)
        model = model_from_payload(payload["model"], device, options["attn_implementation"])
        batches = [batch.to(device) for batch in batches_from_payload(payload["batches"])]
        self._evaluator = FastMaskEvaluator(
            model,
            batches,
            metric=options["metric"],
            amp=options["amp"],
            masks_per_forward=options["masks_per_forward"],
            cache_bytes=options["cache_bytes"],
        )
        self._evaluator.set_anchor(torch.tensor(options["anchor"], dtype=torch.bool))

    def ready(self) -> int:
        """Answers once the evaluator is built: the actor's torch thread count."""
        return torch.get_num_threads()

    def anchor(self) -> list[list[bool]]:
        """The evaluator's anchor as nested lists (bool ``(L, H)``, True = keep)."""
        return self._evaluator.anchor.tolist()

    def set_anchor(self, anchor: np.ndarray) -> None:
        """Make ``anchor`` (bool ``(L, H)``, True = keep) the evaluator's anchor."""
        self._evaluator.set_anchor(torch.tensor(np.asarray(anchor), dtype=torch.bool))

    def evaluate(self, masks: np.ndarray) -> list[float]:
        """Metric in points of each bool mask of ``masks`` ``(M, L, H)``, in order."""
        stacked = torch.tensor(np.asarray(masks), dtype=torch.bool)
        return self._evaluator.evaluate_many(list(stacked))


def _is_dead(ray: Any, actor: Any, timeout: float) -> bool:
    """Whether a call on ``actor`` fails as calls on a dead actor do."""
    try:
        ray.get(actor.ready.remote(), timeout=max(0.1, timeout))
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        return False
    return False


class RayMaskEvaluator:
    """Evaluate head masks on Ray actors: the :class:`pruning.methods.astar.MaskEvaluator` API.

    See the module docstring for what runs where, how masks are dealt and the float-rounding
    caveat. Use it as a context manager (or call :meth:`close`) so the actors die with it.

    Args:
        model: a supported classifier on its device (CUDA: actors take one GPU each, otherwise
            one CPU); heads may already be removed (masks use the original grid). Never modified.
        batches: labelled batches from :func:`pruning.data.make_batches`, as for
            :class:`FastMaskEvaluator`.
        settings: a Ray executor (``kind="ray"``); ``settings.workers`` actors, or one per CPU
            (GPU) of the cluster.
        metric, amp, masks_per_forward, cache_bytes: as for :class:`FastMaskEvaluator`, used by
            each actor (``cache_bytes`` is per actor).
        on_evaluation: called on the driver after each mask's result arrives, with the running
            count (progress, cancellation).
        masks_per_call: masks per actor call; None = 1 on CPU, a quarter of an actor's share on
            CUDA.
        start_timeout_s: how long to wait for the actors to start.

    Attributes:
        n_evaluations: masks evaluated so far.

    Raises:
        ValueError: a local executor, no or unlabelled batches, an unknown metric,
            ``masks_per_call < 1``; later, on the first evaluation, a cluster that cannot be
            reached or cannot start the actors.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: list[Batch],
        *,
        settings: ExecutorSettings,
        metric: str = "accuracy",
        amp: bool | None = None,
        masks_per_forward: int | None = None,
        cache_bytes: int | None = None,
        on_evaluation: Callable[[int], None] | None = None,
        masks_per_call: int | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        if not settings.is_ray:
            raise ValueError(
                "RayMaskEvaluator needs a Ray executor (kind='ray'); use FastMaskEvaluator "
                "for local evaluation."
            )
        if len(batches) == 0:
            raise ValueError("No batches to evaluate; build them with pruning.data.make_batches.")
        if any(batch.labels is None for batch in batches):
            raise ValueError("Every batch needs labels; pass labels to make_batches.")
        if metric not in SCORE_METRICS:
            raise ValueError(
                f"Unknown metric {metric!r}; use 'accuracy', 'mcc' or 'f1' (macro-F1)."
            )
        if masks_per_call is not None and masks_per_call < 1:
            raise ValueError(f"masks_per_call must be >= 1 (got {masks_per_call}).")
        self.model = model
        self.batches = batches
        self.settings = settings
        self.metric = metric
        self.amp = amp
        self.masks_per_forward = masks_per_forward
        self.cache_bytes = cache_bytes
        self.on_evaluation = on_evaluation
        self.masks_per_call = masks_per_call
        self.start_timeout_s = start_timeout_s
        self.n_evaluations = 0
        self._anchor = present_mask(model)
        self._ray: Any = None
        self._payload: Any = None
        self._actors: list[Any] | None = None
        self._handles: tuple[Any, ...] = ()
        self._closed = False

    # -------------------------------------------------------------------------------------------
    # public

    @property
    def actors(self) -> tuple[Any, ...]:
        """Handles of the actors this evaluator started (none before the first evaluation;
        after :meth:`close` they are dead: a call on them raises ``ray.exceptions.RayActorError``).
        """
        return self._handles

    @property
    def use_gpu(self) -> bool:
        """Whether the actors take a GPU each (the model is on CUDA)."""
        return model_device(self.model).type == "cuda"

    def start(self) -> int:
        """Start the actors now (otherwise the first evaluation does); returns how many."""
        return len(self._started())

    def __call__(self, mask: torch.Tensor) -> float:
        """The metric, in points (x 100), with the heads where ``mask`` is False switched off."""
        return self.evaluate_many([mask])[0]

    def evaluate_many(self, masks: Sequence[torch.Tensor]) -> list[float]:
        """The metric in points of each bool ``(n_layers, n_heads)`` mask, in the order given.

        Raises:
            ValueError: on a mask of the wrong shape or dtype.
            RuntimeError: an actor failed (the message carries Ray's error).
            Whatever ``on_evaluation`` raises (e.g. ``JobCancelled``); outstanding calls are
            cancelled first.
        """
        checked = [self._check(mask, f"masks[{i}]") for i, mask in enumerate(masks)]
        if not checked:
            return []
        actors = self._started()
        ray = self._ray
        pending: dict[Any, list[int]] = {}
        for actor_index, positions in self._plan(len(checked), len(actors)):
            stacked = np.stack([checked[position].numpy() for position in positions])
            pending[actors[actor_index].evaluate.remote(stacked)] = positions
        scores = [0.0] * len(checked)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    positions = pending.pop(ref)
                    values = self._get(ref)
                    for position, value in zip(positions, values, strict=True):
                        scores[position] = float(value)
                        self.n_evaluations += 1
                        if self.on_evaluation is not None:
                            self.on_evaluation(self.n_evaluations)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return scores

    def set_anchor(self, mask: torch.Tensor) -> None:
        """Make ``mask`` the anchor on every actor (later candidates differ from it in a few heads).

        Raises:
            ValueError: on a mask of the wrong shape or dtype.
        """
        self._anchor = self._check(mask, "anchor")
        if self._actors:
            anchor = self._anchor.numpy()
            for ref in [actor.set_anchor.remote(anchor) for actor in self._actors]:
                self._get(ref)

    def close(self) -> None:
        """Kill the actors and wait until Ray reports them dead (idempotent).

        The evaluator cannot be used afterwards. ``ray.kill`` is asynchronous: until the kill has
        landed, an idle actor may still answer, so this waits (at most ``KILL_WAIT_S``) until a
        call on each actor fails as it does on a dead one.
        """
        self._closed = True
        actors, self._actors, self._payload = self._actors or [], None, None
        if not actors:
            return
        ray = self._ray
        try:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            deadline = time.monotonic() + KILL_WAIT_S
            for actor in actors:
                while not _is_dead(ray, actor, deadline - time.monotonic()):
                    if time.monotonic() > deadline:
                        log.warning("a killed Ray evaluation actor still answers")
                        break
                    time.sleep(0.05)
        except Exception as error:  # a dead cluster must not hide the caller's exception
            log.warning("could not stop the Ray evaluation actors: %s", error)
            return
        log.info("stopped %d Ray evaluation actors", len(actors))

    def __enter__(self) -> RayMaskEvaluator:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------
    # internals

    def _check(self, mask: torch.Tensor, name: str) -> torch.Tensor:
        """Shape and dtype checked, on CPU, removed heads cleared: bool ``(L, H)``."""
        return checked_bool_mask(self.model, mask, name)

    def _plan(self, count: int, n_actors: int) -> list[tuple[int, list[int]]]:
        """``(actor, positions)`` calls: round-robin shares, each cut into calls in order."""
        calls = []
        for actor_index in range(n_actors):
            share = list(range(actor_index, count, n_actors))
            if not share:
                continue
            size = self.masks_per_call or (
                math.ceil(len(share) / GPU_CALLS_PER_ACTOR) if self.use_gpu else 1
            )
            calls += [(actor_index, share[i : i + size]) for i in range(0, len(share), size)]
        # Interleave the actors' calls so that the first results come from every actor.
        return sorted(calls, key=lambda call: (call[1][0] // n_actors, call[0]))

    def _get(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as error:
            raise RuntimeError(
                f"A Ray evaluation actor failed: {error}. Check the cluster (`ray status`) and "
                "run again, or use the local executor."
            ) from error

    def _started(self) -> list[Any]:
        """The actors, started on first use."""
        if self._closed:
            raise ValueError("This RayMaskEvaluator was closed; build a new one.")
        if self._actors is not None:
            return self._actors
        ray = self._ray = connect(self.settings)
        use_gpu = self.use_gpu
        count = self.settings.workers or cluster_slots(ray, use_gpu=use_gpu)
        config = getattr(self.model, "config", None)
        options = {
            "device": "cuda" if use_gpu else "cpu",
            "attn_implementation": getattr(config, "_attn_implementation", None) or "sdpa",
            "metric": self.metric,
            "amp": self.amp,
            "masks_per_forward": self.masks_per_forward,
            "cache_bytes": self.cache_bytes,
            "anchor": self._anchor.tolist(),
        }
        self._payload = ray.put(
            {"model": model_payload(self.model), "batches": batches_payload(self.batches)}
        )
        # No restarts: a crashed actor fails the call with a clear error (a restarted one would
        # have lost its anchor, and the search on the driver is cheap to run again).
        remote = ray.remote(EvaluatorActor).options(
            num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=0
        )
        actors = [remote.remote(self._payload, options) for _ in range(count)]
        self._actors, self._handles = actors, tuple(actors)
        need = "1 GPU" if use_gpu else "1 CPU"
        try:
            ray.get([actor.ready.remote() for actor in actors], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ValueError(
                f"Ray did not start {count} evaluation actors ({need} each) within "
                f"{self.start_timeout_s:.0f} s; the cluster has {ray.cluster_resources()}. "
                "Ask for fewer Ray workers (--ray-workers) or add nodes."
            ) from None
        except ray.exceptions.RayError as error:
            self.close()
            raise RuntimeError(
                f"A Ray evaluation actor failed to start: {error}. Every node needs HeadScope "
                "installed (pip install 'headscope[ray]')."
            ) from error
        log.info("started %d Ray evaluation actors (%s each)", count, need)
        return actors
