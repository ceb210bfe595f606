"""The "masked vs removed" check: does a run's pruned model compute what its mask says?

HeadScope has two ways to switch heads off (:mod:`pruning.heads`): gates (hooks that scale a
head's output, the model unchanged) and removal (q/k/v rows and output-projection columns cut
out). Methods score and evaluate masks with gates; the stored, exported and timed model is the
removed one. For every mask the two must give the same logits; this module checks that for a
stored run on real texts, and caches the verdict.

What is compared, by kind of run (the texts form ONE padded batch, eval mode, fp32):

* head-level run without a model of its own: the prepared classifier with the run's head mask
  applied by gates (:func:`pruning.heads.apply_mask`) vs the prepared classifier with those
  heads physically removed (:func:`pruning.heads.remove_heads` on a copy) -- exactly the model
  :func:`pruning.run_models.load_ref` rebuilds for the run.
* weight-level run (DeepCuts, unstructured; ``info["granularity"] == "weight"``, weight masks in
  ``extra_tensors``): the run's stored model multiplied by its stored weight masks, with the heads
  the masks empty entirely gated off, vs the stored model as it is (its zeroed weights) with those
  heads physically removed. A match means the stored zeros are where the masks say, and removing
  the emptied heads changes nothing. The prepared classifier only lends its tokenizer.

"not_applicable", with a reason a user understands:

* a head-level run that keeps its own model (recovery fine-tuning, pruning before fine-tuning,
  gates trained together with the weights): its heads are already removed and its weights are no
  longer the prepared classifier's, so there is no gated counterpart to compare with;
* a head mask that removes nothing (gated and removed are the unchanged classifier);
* a run made from another prepared classifier than the one given, or one whose mask does not fit
  the classifier's head grid;
* a weight-level run that stores no weight masks or no model.

Results are cached per (run key, prepared key) in ``$HEADSCOPE_HOME/consistency/<run key>.json``
(JSON only, written to a temporary file and renamed into place). An entry is used only when it was
made by this version of the check, with the same texts and tolerance, for the same stored run
(its creation time); a damaged file is ignored (logged) and replaced by the next result.
Concurrent writers may drop each other's entries for other prepared models; they are recomputed.

Mask convention: bool ``(n_layers, n_heads)``, True = keep.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

import pruning.heads as heads
from cache.paths import headscope_home
from cache.run_format import KEY_PATTERN
from pruning.batching import make_batches

if TYPE_CHECKING:
    from cache.model_store import ModelStore
    from cache.run_format import RunRecord
    from cache.run_store import RunStore
    from pruning.data import LabelledDataset
    from pruning.models import LoadedClassifier

__all__ = [
    "CHECK_VERSION",
    "DEFAULT_TEXTS",
    "DEFAULT_TOLERANCE",
    "ConsistencyResult",
    "cached_result",
    "check_masked_vs_removed",
    "check_run",
    "check_stored_runs",
    "check_texts",
    "consistency_dir",
    "consistency_texts",
    "not_applicable_reason",
    "store_result",
    "write_json_atomically",
]

log = logging.getLogger(__name__)

Status = Literal["match", "mismatch", "not_applicable"]
STATUSES: tuple[Status, ...] = ("match", "mismatch", "not_applicable")
# Bump when what is compared changes: cached verdicts of older versions are recomputed.
CHECK_VERSION = 1
DEFAULT_TOLERANCE = 1e-4
DEFAULT_TEXTS = 32
CACHE_FORMAT = "headscope-consistency"
MAX_LENGTH = 128


@dataclass(frozen=True)
class ConsistencyResult:
    """The verdict of one masked-vs-removed check.

    Attributes:
        status: ``"match"`` (max |Δlogit| <= tolerance), ``"mismatch"`` or ``"not_applicable"``.
        max_abs_diff: largest absolute logit difference over the texts and classes (None when
            nothing was compared).
        n_texts: texts compared (0 when nothing was compared).
        reason: one sentence for the user: what was compared, or why nothing was.
        tolerance: the largest difference still called a match.
        compared: ``"heads"`` (gated vs removed heads of the prepared classifier),
            ``"weights"`` (weight-masked vs zeroed weights of a weight-level run) or ``""``.
    """

    status: Status
    max_abs_diff: float | None
    n_texts: int
    reason: str
    tolerance: float = DEFAULT_TOLERANCE
    compared: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {self.status!r}.")

    @property
    def summary(self) -> str:
        """One line: the verdict with the largest difference, or the reason it does not apply."""
        if self.status == "not_applicable":
            return f"n/a: {self.reason}"
        diff = "n/a" if self.max_abs_diff is None else f"{self.max_abs_diff:.2e}"
        return f"{self.status}: max |Δlogit| {diff} over {self.n_texts} texts"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (a NaN difference becomes None)."""
        data = asdict(self)
        if data["max_abs_diff"] is not None and not math.isfinite(data["max_abs_diff"]):
            data["max_abs_diff"] = None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyResult:
        """Rebuild a result from :meth:`to_dict` output.

        Raises:
            ValueError: missing fields or values of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"A consistency result must be a JSON object; got {type(data)}.")
        try:
            status, reason, n_texts = data["status"], data["reason"], data["n_texts"]
            diff, tolerance = data["max_abs_diff"], data.get("tolerance", DEFAULT_TOLERANCE)
        except KeyError as error:
            raise ValueError(f"A consistency result lacks the field {error}.") from None
        numbers_ok = isinstance(n_texts, int) and not isinstance(n_texts, bool) and n_texts >= 0
        numbers_ok &= diff is None or (isinstance(diff, int | float) and not isinstance(diff, bool))
        numbers_ok &= isinstance(tolerance, int | float) and not isinstance(tolerance, bool)
        compared = data.get("compared", "")
        if not (numbers_ok and isinstance(reason, str) and isinstance(compared, str)):
            raise ValueError(f"A consistency result has values of the wrong type: {dict(data)}.")
        return cls(
            status=status,
            max_abs_diff=None if diff is None else float(diff),
            n_texts=int(n_texts),
            reason=reason,
            tolerance=float(tolerance),
            compared=compared,
        )


def _not_applicable(reason: str, tolerance: float) -> ConsistencyResult:
    return ConsistencyResult("not_applicable", None, 0, reason, tolerance)


def _is_weight_level(record: RunRecord) -> bool:
    return record.info.get("granularity") == "weight" or bool(record.extra_tensors)


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list of non-empty strings.

    Raises:
        ValueError: no texts, one string instead of a sequence, or an empty / non-string text.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it in a list.")
    items = list(texts)
    if not items:
        raise ValueError("Give at least one text to compare the logits on.")
    for index, text in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts[{index}] is not a non-empty string; give real texts.")
    return items


def not_applicable_reason(record: RunRecord, *, prepared_key: str | None = None) -> str | None:
    """Why the check cannot be run for this run (None when it can), without loading a model.

    Args:
        record: the stored run.
        prepared_key: the prepared classifier the check would use (None: not checked).
    """
    run_prepared = str(record.model.get("prepared_key") or "")
    if _is_weight_level(record):
        if not record.extra_tensors:
            return "this weight-level run stores no weight masks, so there is nothing to check."
        if not record.has_model:
            return "this weight-level run stores no model, so its zeroed weights cannot be read."
        return None
    if record.has_model:
        return (
            "this run keeps its own fine-tuned model (recovery fine-tuning, pruning before "
            "fine-tuning or trained weights): its heads are already removed and its weights are "
            "no longer the prepared classifier's, so there is no gated model to compare with."
        )
    if bool(record.mask.to(torch.bool).all()):
        return "the mask removes no head: the gated and the removed model are both the original."
    if not run_prepared:
        return "the run names no prepared classifier to rebuild its model from."
    if prepared_key is not None and run_prepared != prepared_key:
        return (
            f"the run was made from another prepared classifier ({run_prepared[:8]}), not "
            f"{prepared_key[:8]}; choose that classifier to check it."
        )
    return None


def _one_batch(tokenizer: Any, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The texts as ONE padded batch in input order (padding exercises the attention mask)."""
    (batch,) = make_batches(
        tokenizer, texts, batch_size=len(texts), max_length=MAX_LENGTH, bucket=False
    )
    return batch.to(device).model_inputs()


def _fp32(model: nn.Module) -> nn.Module:
    """``model`` itself when it is fp32, else an fp32 copy (the original is never changed)."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.dtype == torch.float32:
        return model
    return copy.deepcopy(model).float()


def _logits(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None
) -> torch.Tensor:
    """fp32 logits ``(B, num_labels)`` on the CPU, in eval mode, optionally with heads gated."""
    was_training = model.training
    model.eval()
    try:
        gate = heads.apply_mask(model, mask) if mask is not None else nullcontext()
        with torch.inference_mode(), gate:
            output = model(**inputs)
        return output.logits.detach().to("cpu", torch.float64)
    finally:
        model.train(was_training)


def _verdict(
    gated: torch.Tensor, removed: torch.Tensor, n_texts: int, tolerance: float, compared: str
) -> ConsistencyResult:
    diff = float((gated - removed).abs().max()) if gated.numel() else 0.0
    if gated.shape != removed.shape:
        diff = math.nan
    ok = math.isfinite(diff) and diff <= tolerance
    what = (
        "gated vs removed heads of the prepared classifier"
        if compared == "heads"
        else "the stored weights multiplied by the run's weight masks (emptied heads gated) vs "
        "the stored zeroed weights (emptied heads removed)"
    )
    if ok:
        reason = f"Logits agree within {tolerance:g}: {what}."
    elif math.isfinite(diff):
        reason = f"Logits differ by up to {diff:.3g} (tolerance {tolerance:g}): {what}."
    else:
        reason = f"The logits could not be compared (shapes {tuple(gated.shape)} vs "
        reason += f"{tuple(removed.shape)} or non-finite values): {what}."
    status: Status = "match" if ok else "mismatch"
    return ConsistencyResult(status, diff, n_texts, reason, tolerance, compared)


def check_masked_vs_removed(
    record: RunRecord,
    prepared: LoadedClassifier,
    texts: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    prepared_key: str | None = None,
    run_store: RunStore | None = None,
) -> ConsistencyResult:
    """Compare the logits of a run's masked model and its model with the heads removed.

    See the module docstring for what is compared for each kind of run and when the check does
    not apply. Neither ``prepared.model`` nor the stored run is changed; the work runs on the
    prepared model's device.

    Args:
        record: the stored run (mask bool ``(n_layers, n_heads)``, True = keep).
        prepared: the prepared classifier the run was made from (its tokenizer is used for all
            runs, its weights for head-level runs).
        texts: texts to run, as one padded batch (e.g. 32 evaluation texts).
        tolerance: largest max |Δlogit| still called a match.
        prepared_key: the prepared classifier's store key; when given, a run made from another
            one is "not_applicable".
        run_store: where a weight-level run's model is loaded from (default store).

    Raises:
        ValueError: no texts or an invalid tolerance.
    """
    items = check_texts(texts)
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0; got {tolerance!r}.")
    tolerance = float(tolerance)
    reason = not_applicable_reason(record, prepared_key=prepared_key)
    if reason is not None:
        return _not_applicable(reason, tolerance)
    base = _fp32(prepared.model)
    parameter = next(base.parameters())
    inputs = _one_batch(prepared.tokenizer, items, parameter.device)
    mask = record.mask.to(torch.bool)
    if _is_weight_level(record):
        return _check_weight_level(
            record, inputs, len(items), tolerance, parameter.device, run_store
        )
    if heads.head_grid(base) != tuple(mask.shape):
        return _not_applicable(
            f"the run's mask is {tuple(mask.shape)} (layers x heads) but the classifier has "
            f"{heads.head_grid(base)}: it belongs to another model.",
            tolerance,
        )
    gated = _logits(base, inputs, mask)
    removed_model = heads.remove_heads(base, mask)
    removed = _logits(removed_model, inputs)
    del removed_model
    return _verdict(gated, removed, len(items), tolerance, "heads")


def _check_weight_level(
    record: RunRecord,
    inputs: Mapping[str, torch.Tensor],
    n_texts: int,
    tolerance: float,
    device: torch.device,
    run_store: RunStore | None,
) -> ConsistencyResult:
    """Stored weights x masks (emptied heads gated) vs stored zeros (emptied heads removed)."""
    from cache.run_store import RunStore
    from pruning.weight_scores import apply_weight_masks

    store = run_store or RunStore()
    stored = _fp32(store.load_model(record.key, device=device).model)
    mask = record.mask.to(torch.bool)
    try:
        masked = apply_weight_masks(stored, dict(record.extra_tensors))
        grid_ok = heads.head_grid(stored) == tuple(mask.shape)
    except ValueError as error:
        reason = f"The stored weight masks do not fit the stored model: {error}"
        return ConsistencyResult("mismatch", None, 0, reason, tolerance, "weights")
    if not grid_ok:
        reason = (
            f"The run's head mask {tuple(mask.shape)} does not fit its stored model "
            f"{heads.head_grid(stored)}."
        )
        return ConsistencyResult("mismatch", None, 0, reason, tolerance, "weights")
    gated = _logits(masked, inputs, mask)
    del masked
    removed = _logits(heads.remove_heads(stored, mask), inputs)
    return _verdict(gated, removed, n_texts, tolerance, "weights")


# ---------------------------------------------------------------------------------------------
# The cache: $HEADSCOPE_HOME/consistency/<run key>.json


def consistency_dir() -> Path:
    """Folder of the cached verdicts (created on first use)."""
    path = headscope_home() / "consistency"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_path(run_key: str) -> Path:
    if not isinstance(run_key, str) or not KEY_PATTERN.match(run_key):
        raise ValueError(f"{run_key!r} is not a run key (16-64 lowercase hex digits).")
    return consistency_dir() / f"{run_key}.json"


def _texts_sha256(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it into place."""
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem[:24]}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, sort_keys=True, allow_nan=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_document(path: Path, run_key: str) -> dict[str, Any] | None:
    """The cache file's document, or None when missing or damaged (logged)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("ignoring the damaged consistency cache %s: %s", path, error)
        return None
    if (
        not isinstance(document, dict)
        or document.get("format") != CACHE_FORMAT
        or document.get("run_key") != run_key
        or not isinstance(document.get("entries"), dict)
    ):
        log.warning("ignoring the consistency cache %s: not a %s file", path, CACHE_FORMAT)
        return None
    return document


def _entry_stamp(record: RunRecord, texts: Sequence[str], tolerance: float) -> dict[str, Any]:
    return {
        "version": CHECK_VERSION,
        "run_created": record.created,
        "texts_sha256": _texts_sha256(texts),
        "tolerance": float(tolerance),
    }


def cached_result(
    record: RunRecord,
    prepared_key: str,
    texts: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ConsistencyResult | None:
    """The cached verdict for this run, prepared classifier, texts and tolerance, if any."""
    document = _read_document(_cache_path(record.key), record.key)
    if document is None:
        return None
    entry = document["entries"].get(prepared_key)
    if not isinstance(entry, dict):
        return None
    stamp = _entry_stamp(record, texts, tolerance)
    if any(entry.get(name) != value for name, value in stamp.items()):
        return None
    try:
        return ConsistencyResult.from_dict(entry.get("result"))  # type: ignore[arg-type]
    except ValueError as error:
        log.warning("ignoring a damaged consistency entry of run %s: %s", record.key, error)
        return None


def store_result(
    record: RunRecord,
    prepared_key: str,
    texts: Sequence[str],
    result: ConsistencyResult,
) -> Path:
    """Cache a verdict (atomically; other prepared classifiers' entries are kept)."""
    path = _cache_path(record.key)
    document = _read_document(path, record.key) or {
        "format": CACHE_FORMAT,
        "run_key": record.key,
        "entries": {},
    }
    entry = {**_entry_stamp(record, texts, result.tolerance), "result": result.to_dict()}
    document["entries"][str(prepared_key)] = entry
    write_json_atomically(path, document)
    return path


def check_run(
    record: RunRecord,
    prepared_key: str,
    load_prepared: Callable[[], LoadedClassifier],
    texts: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    run_store: RunStore | None = None,
    refresh: bool = False,
) -> ConsistencyResult:
    """The cached verdict, or the check run now (and cached).

    Args:
        load_prepared: returns the prepared classifier; called only when a model is needed
            (never for a cached verdict or a run the check does not apply to).
        refresh: ignore the cache and check again.
    """
    items = check_texts(texts)
    if not refresh:
        cached = cached_result(record, prepared_key, items, tolerance=tolerance)
        if cached is not None:
            return cached
    reason = not_applicable_reason(record, prepared_key=prepared_key)
    if reason is not None:
        result = _not_applicable(reason, float(tolerance))
    else:
        result = check_masked_vs_removed(
            record,
            load_prepared(),
            items,
            tolerance=tolerance,
            prepared_key=prepared_key,
            run_store=run_store,
        )
    try:
        store_result(record, prepared_key, items, result)
    except OSError as error:
        log.warning("could not cache the consistency check of run %s: %s", record.key, error)
    return result


def check_stored_runs(
    keys: Sequence[str],
    prepared_key: str,
    texts: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    on_progress: Callable[[float, str], None] | None = None,
    run_store: RunStore | None = None,
    model_store: ModelStore | None = None,
) -> tuple[dict[str, ConsistencyResult], dict[str, str]]:
    """:func:`check_run` for stored runs of one prepared classifier (loaded once, when needed).

    Args:
        on_progress: called as ``on_progress(fraction, message)`` before each run; it may raise
            to cancel (verdicts reached so far stay cached).

    Returns:
        ``(verdicts, errors)``: the verdict of every run that could be checked, and for the
        others (deleted, damaged, their model unreadable) the reason, by run key.
    """
    from cache.model_store import ModelStore
    from cache.run_store import RunStore

    store = run_store or RunStore()
    models = model_store or ModelStore()
    loaded: dict[str, LoadedClassifier] = {}

    def load() -> LoadedClassifier:
        if not loaded:
            loaded["model"] = models.resolve(prepared_key).load()
        return loaded["model"]

    verdicts: dict[str, ConsistencyResult] = {}
    errors: dict[str, str] = {}
    for number, key in enumerate(keys):
        if on_progress is not None:
            on_progress(number / max(1, len(keys)), f"checking run {number + 1} of {len(keys)}")
        try:
            verdicts[key] = check_run(
                store.get(key), prepared_key, load, texts, tolerance=tolerance, run_store=store
            )
        except (OSError, ValueError) as error:
            errors[key] = str(error)
    if on_progress is not None:
        on_progress(1.0, f"checked {len(verdicts)} of {len(keys)} runs")
    return verdicts, errors


def consistency_texts(dataset: LabelledDataset, n: int = DEFAULT_TEXTS) -> list[str]:
    """The texts the dashboard and the CLI check runs on: ``n`` test texts (stratified, seed 0),
    or validation texts when the test split is empty."""
    split = dataset.test if len(dataset.test) else dataset.validation
    if not len(split):
        raise ValueError(f"{dataset.name} has no test or validation texts to check runs on.")
    return list(split.subset(n, seed=0).texts)
