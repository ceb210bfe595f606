"""The classifiers a prepared model has led to: itself and every stored pruning run made from it.

A :class:`ModelRef` names one of them without loading it (pages list them, caches key on
:func:`ref_fingerprint`); :func:`load_ref` turns it into a :class:`pruning.models.LoadedClassifier`:

* ``kind="prepared"``: the fine-tuned, unpruned classifier of the model store;
* ``kind="run"``: a run's stored pruned (and recovered) model when it kept one, else the prepared
  model with the run's head mask applied by :func:`pruning.heads.remove_heads` (bool
  ``(n_layers, n_heads)``, True = keep) -- the same model the run evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cache.model_store import ModelStore
from cache.run_store import RunStore

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from pruning.models import LoadedClassifier

__all__ = ["ModelRef", "load_ref", "model_refs", "prepared_ref", "ref_fingerprint", "run_ref"]

RefKind = Literal["prepared", "run"]
ORIGINAL_LABEL = "original"
_SHORT_KEY = 6


@dataclass(frozen=True)
class ModelRef:
    """One classifier to explain or compare, named but not loaded.

    Attributes:
        kind: ``"prepared"`` (the unpruned classifier) or ``"run"`` (a stored pruning run).
        key: the model store key or the run key.
        label: what the UI shows: ``"original"`` for the prepared model, else the run's name
            followed by a short key, e.g. ``"HISP 50% · 3f2a9c"``.
    """

    kind: RefKind
    key: str
    label: str


def prepared_ref(prepared: PreparedModel) -> ModelRef:
    """The reference of a prepared (unpruned) classifier."""
    return ModelRef(kind="prepared", key=prepared.key, label=ORIGINAL_LABEL)


def run_ref(key: str, name: str) -> ModelRef:
    """The reference of a stored run, labelled with its name and a short key."""
    return ModelRef(kind="run", key=key, label=f"{name} · {key[:_SHORT_KEY]}")


def model_refs(prepared: PreparedModel, store: RunStore) -> list[ModelRef]:
    """The prepared classifier first, then every stored run made from it, newest first.

    A run made from it has ``record.model["prepared_key"] == prepared.key`` and, as the pipeline
    records it, the model fingerprint ``"prepared:<key>"``; the run index's summaries carry that
    fingerprint, so no run folder is opened. Damaged runs are skipped (the run list reports them).
    """
    summaries, _ = store.list(model_fingerprint=f"prepared:{prepared.key}")
    return [prepared_ref(prepared), *(run_ref(s.key, s.name) for s in summaries)]


def ref_fingerprint(ref: ModelRef) -> str:
    """A stable identity for cache keys: ``"prepared:<key>"`` or ``"run:<key>"``.

    Both keys are content keys (they hash everything that determines the model), so the same
    fingerprint means the same classifier.
    """
    return f"{ref.kind}:{ref.key}"


def load_ref(
    ref: ModelRef,
    *,
    device: Any = None,
    run_store: RunStore | None = None,
    model_store: ModelStore | None = None,
) -> LoadedClassifier:
    """Load the classifier a reference names (``device=None`` picks CUDA, MPS or CPU).

    Raises:
        ValueError: the prepared model or the run is not stored (any more), a run's prepared
            model is gone, or the reference kind is unknown; the message says what to do.
    """
    model_store = model_store or ModelStore()
    if ref.kind == "prepared":
        return _load_prepared(model_store, ref.key, device)
    if ref.kind != "run":
        raise ValueError(f"Unknown model reference kind {ref.kind!r}; use 'prepared' or 'run'.")
    run_store = run_store or RunStore()
    try:
        record = run_store.get(ref.key)
    except KeyError as error:
        raise ValueError(
            f"No stored run has key {ref.key!r}; `headscope runs` (or the Runs page) lists them."
        ) from error
    if record.has_model:
        return run_store.load_model(ref.key, device=device)
    from pruning.heads import remove_heads

    prepared_key = record.model.get("prepared_key")
    if not prepared_key:
        raise ValueError(
            f"Run {ref.key} stores no model and names no prepared model to rebuild it from; "
            "run it again with `headscope prune`."
        )
    base = _load_prepared(model_store, str(prepared_key), device)
    base.model = remove_heads(base.model, record.mask)
    base.model.eval()
    base.meta = {**base.meta, "run_key": ref.key}
    return base


def _load_prepared(store: ModelStore, key: str, device: Any) -> LoadedClassifier:
    entry = store.get(key) if key else None
    if entry is None:
        raise ValueError(
            f"No prepared model has key {key!r}; it was deleted or never prepared. "
            "`headscope models` lists them; `headscope prepare` makes one."
        )
    return entry.load(device=device)
