"""The executor setting (local or Ray): parsing, validation, environment, connecting."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from pruning.executors import (
    INSTALL_HINT,
    LOCAL,
    ExecutorSettings,
    cluster_slots,
    connect,
    ray_installed,
    settings_from_env,
)


def test_local_is_the_default_and_describes_itself() -> None:
    assert ExecutorSettings() == LOCAL
    assert LOCAL.kind == "local" and not LOCAL.is_ray
    assert LOCAL.describe() == "local (this process)"
    assert LOCAL.to_dict() == {
        "kind": "local",
        "address": "auto",
        "workers": None,
        "num_cpus": None,
    }


@pytest.mark.parametrize(
    "address", ["auto", "local", "127.0.0.1:6379", "ray://head.example.org:10001", "[::1]:6379"]
)
def test_valid_ray_addresses_are_kept(address: str) -> None:
    settings = ExecutorSettings(kind="ray", address=f"  {address} ", workers=2)
    assert settings.is_ray and settings.address == address
    assert settings.describe() == f"Ray at {address}, 2 workers"
    assert ExecutorSettings(kind="ray", address=address).describe() == f"Ray at {address}"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "dask"}, "Unknown executor 'dask'; choose 'local'"),
        ({"kind": "ray", "address": "somewhere"}, "is not 'auto', 'local', 'host:port'"),
        ({"kind": "ray", "address": "host:port"}, "for example 127.0.0.1:6379"),
        ({"kind": "ray", "address": "a b:1"}, "is not 'auto'"),
        ({"kind": "ray", "address": ""}, "is not 'auto'"),
        ({"kind": "ray", "workers": 0}, "between 1 and 4096"),
        ({"kind": "ray", "workers": 5000}, "between 1 and 4096"),
        ({"kind": "ray", "num_cpus": 0}, "num_cpus must be between 1 and 4096"),
    ],
)
def test_bad_settings_are_refused_with_what_to_do(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExecutorSettings(**fields)


def test_settings_from_the_environment() -> None:
    assert settings_from_env({}) == LOCAL
    assert settings_from_env({"HEADSCOPE_EXECUTOR": " "}) == LOCAL
    settings = settings_from_env(
        {
            "HEADSCOPE_EXECUTOR": " RAY ",
            "HEADSCOPE_RAY_ADDRESS": "10.0.0.5:6379",
            "HEADSCOPE_RAY_WORKERS": " 3 ",
        }
    )
    assert settings == ExecutorSettings(kind="ray", address="10.0.0.5:6379", workers=3)
    assert settings_from_env(
        {"HEADSCOPE_EXECUTOR": "ray", "HEADSCOPE_RAY_ADDRESS": ""}
    ).address == ("auto")


def test_settings_from_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSCOPE_EXECUTOR", "ray")
    monkeypatch.setenv("HEADSCOPE_RAY_ADDRESS", "local")
    monkeypatch.delenv("HEADSCOPE_RAY_WORKERS", raising=False)
    assert settings_from_env() == ExecutorSettings(kind="ray", address="local")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"HEADSCOPE_RAY_WORKERS": "two"}, r"HEADSCOPE_RAY_WORKERS='two' is not a whole number"),
        ({"HEADSCOPE_EXECUTOR": "spark"}, r"Unknown executor 'spark'.*HEADSCOPE_EXECUTOR"),
        (
            {"HEADSCOPE_EXECUTOR": "ray", "HEADSCOPE_RAY_ADDRESS": "nowhere"},
            r"'nowhere' is not 'auto'.*HEADSCOPE_RAY_\*",
        ),
        ({"HEADSCOPE_EXECUTOR": "ray", "HEADSCOPE_RAY_WORKERS": "0"}, r"between 1 and 4096"),
    ],
)
def test_malformed_environment_names_the_variables(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_env(environ)


def test_connect_needs_a_ray_executor() -> None:
    with pytest.raises(ValueError, match=r"needs a Ray executor \(kind='ray'\)"):
        connect(LOCAL)


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError now
    assert not ray_installed()
    with pytest.raises(ValueError, match="needs Ray") as caught:
        connect(ExecutorSettings(kind="ray", address="local"))
    assert INSTALL_HINT in str(caught.value)
    assert "pip install 'headscope[ray]'" in str(caught.value)


class _FakeRay(types.ModuleType):
    """Stands in for the ``ray`` module: records ``init`` calls, can refuse to connect."""

    def __init__(self, *, refuse: bool = False, resources: dict[str, float] | None = None):
        super().__init__("ray")
        self.refuse = refuse
        self.initialized = False
        self.calls: list[dict[str, Any]] = []
        self.resources = {"CPU": 2.0} if resources is None else resources

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address: str | None = None, **kwargs: Any) -> None:
        self.calls.append({"address": address, **kwargs})
        if self.refuse:
            raise ConnectionError("could not find any running Ray instance")
        self.initialized = True

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)


def test_connect_starts_a_private_instance_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert ray_installed()
    settings = ExecutorSettings(kind="ray", address="local", num_cpus=2)
    assert connect(settings) is fake
    assert connect(settings) is fake  # already connected: no second init
    assert fake.calls == [
        {
            "address": None,
            "log_to_driver": False,
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "num_cpus": 2,
        }
    ]


def test_connect_joins_an_existing_cluster_by_address(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    connect(ExecutorSettings(kind="ray", address="10.1.2.3:6379"))
    assert fake.calls[0]["address"] == "10.1.2.3:6379"
    assert "num_cpus" not in fake.calls[0] and "include_dashboard" not in fake.calls[0]


def test_unreachable_cluster_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", _FakeRay(refuse=True))
    with pytest.raises(ValueError, match=r"No Ray cluster answers at 'auto'") as caught:
        connect(ExecutorSettings(kind="ray"))
    assert "ray start --head" in str(caught.value) and "'local'" in str(caught.value)


@pytest.mark.parametrize(
    ("resources", "use_gpu", "slots"),
    [
        ({"CPU": 8.0, "GPU": 2.0}, False, 8),
        ({"CPU": 8.0, "GPU": 2.0}, True, 2),
        ({"CPU": 3.0}, True, 1),  # no GPU: still one slot
        ({}, False, 1),
        ({"CPU": 0.5}, False, 1),
    ],
)
def test_cluster_slots(resources: dict[str, float], use_gpu: bool, slots: int) -> None:
    assert cluster_slots(_FakeRay(resources=resources), use_gpu=use_gpu) == slots
