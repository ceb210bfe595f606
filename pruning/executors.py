"""Where the heavy work runs: ``local`` (this process, the default) or a Ray cluster.

The setting is the same everywhere: the CLI (``--executor ray --ray-address auto``), the
dashboard's sidebar and the environment (``HEADSCOPE_EXECUTOR``, ``HEADSCOPE_RAY_ADDRESS``,
``HEADSCOPE_RAY_WORKERS``) all produce one :class:`ExecutorSettings`. What runs where with
``ray`` (see README "Scale-out"):

* a **sweep** (several runs: ``bench quality``, several seeds from the Prune page, ``headscope
  sweep``) becomes one Ray task per run, computed on a worker and stored by the driver
  (:mod:`pruning.ray_sweep`);
* a **single A\\* run** (and its baselines) stays on the driver and spreads each iteration's
  candidate evaluations over Ray actors that hold the model and the tokenised texts once
  (:mod:`pruning.ray_eval`).

Ray is an optional extra (``pip install 'headscope[ray]'``): nothing here imports it until a Ray
executor is used, and then a missing install is a clear ``ValueError``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")
# "auto" (an existing cluster found through RAY_ADDRESS or /tmp/ray), "local" (start a private
# instance in this process), "host:port" or "ray://host:port" (a remote cluster).
_ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")
INSTALL_HINT = "Install the optional extra: pip install 'headscope[ray]' (or: pip install ray)."
_lock = threading.Lock()


@dataclass(frozen=True)
class ExecutorSettings:
    """Where sweeps and A* candidate evaluations run.

    Attributes:
        kind: ``"local"`` (this process) or ``"ray"``.
        address: the Ray cluster: ``"auto"`` (a running cluster on this machine, or
            ``RAY_ADDRESS``), ``"local"`` (start a private Ray instance in this process), or
            ``"host:port"`` / ``"ray://host:port"``. Ignored for ``local``.
        workers: how many Ray actors evaluate A* candidates (None = one per CPU, or per GPU
            when CUDA is used, of the cluster; at least 1).
        num_cpus: CPUs of a private instance started with address ``"local"`` (None = all).
    """

    kind: ExecutorKind = "local"
    address: str = "auto"
    workers: int | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(
                f"Unknown executor {self.kind!r}; choose 'local' (this process) or 'ray'."
            )
        address = str(self.address).strip()
        object.__setattr__(self, "address", address)
        if not _ADDRESS.match(address):
            raise ValueError(
                f"Ray address {address!r} is not 'auto', 'local', 'host:port' or "
                "'ray://host:port' (for example 127.0.0.1:6379)."
            )
        if self.workers is not None and not 1 <= self.workers <= 4096:
            raise ValueError("Ray workers must be between 1 and 4096 (or unset: one per CPU).")
        if self.num_cpus is not None and not 1 <= self.num_cpus <= 4096:
            raise ValueError("num_cpus must be between 1 and 4096 (or unset: all CPUs).")

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def describe(self) -> str:
        if not self.is_ray:
            return "local (this process)"
        workers = f", {self.workers} workers" if self.workers else ""
        return f"Ray at {self.address}{workers}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": self.address,
            "workers": self.workers,
            "num_cpus": self.num_cpus,
        }


LOCAL = ExecutorSettings()


def settings_from_env(environ: dict[str, str] | None = None) -> ExecutorSettings:
    """The executor named by ``HEADSCOPE_EXECUTOR`` / ``HEADSCOPE_RAY_ADDRESS`` /
    ``HEADSCOPE_RAY_WORKERS`` (local when unset).

    Raises:
        ValueError: a malformed value (the message names the variable).
    """
    env = os.environ if environ is None else environ
    kind = env.get("HEADSCOPE_EXECUTOR", "local").strip().lower() or "local"
    workers_text = env.get("HEADSCOPE_RAY_WORKERS", "").strip()
    try:
        workers = int(workers_text) if workers_text else None
    except ValueError:
        raise ValueError(
            f"HEADSCOPE_RAY_WORKERS={workers_text!r} is not a whole number of workers."
        ) from None
    try:
        return ExecutorSettings(
            kind=kind,  # type: ignore[arg-type]
            address=env.get("HEADSCOPE_RAY_ADDRESS", "auto") or "auto",
            workers=workers,
        )
    except ValueError as error:
        raise ValueError(
            f"{error} (from the HEADSCOPE_EXECUTOR / HEADSCOPE_RAY_* variables)"
        ) from None


def ray_installed() -> bool:
    """Whether the optional ``ray`` package can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect(settings: ExecutorSettings) -> Any:
    """Connect this process to the Ray cluster of ``settings`` (once) and return the module.

    ``address="local"`` starts a private instance (no dashboard, ``num_cpus`` CPUs); any other
    address joins an existing cluster. Tasks are told the driver's ``HEADSCOPE_HOME`` explicitly,
    so on one machine they read the same model store; on a remote cluster it must be on a shared
    file system at the same path (README "Scale-out"). Only the driver writes the run store.

    Raises:
        ValueError: ``settings`` is not a Ray executor, Ray is not installed, or the cluster
            cannot be reached (the message says how to start one).
    """
    if not settings.is_ray:
        raise ValueError("connect() needs a Ray executor (kind='ray').")
    try:
        import ray
    except ImportError:
        raise ValueError(f"The Ray executor needs Ray. {INSTALL_HINT}") from None
    with _lock:
        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {
            "log_to_driver": False,
            "ignore_reinit_error": True,
        }
        if settings.address == "local":
            kwargs.update(include_dashboard=False, num_cpus=settings.num_cpus)
            address = None
        else:
            address = settings.address
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as error:
            raise ValueError(
                f"No Ray cluster answers at {settings.address!r} ({error}). Start one with "
                "`ray start --head --num-cpus 2` (or choose address 'local' for a private "
                "instance), then try again."
            ) from None
        log.info("connected to Ray: %s", ray.cluster_resources())
        return ray


def cluster_slots(ray: Any, *, use_gpu: bool) -> int:
    """How many single-CPU (or single-GPU) workers the connected cluster can run at once."""
    resources = ray.cluster_resources()
    key = "GPU" if use_gpu else "CPU"
    return max(1, int(resources.get(key, 1)))
