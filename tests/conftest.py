"""Shared fixtures: tiny random encoders built from configs in code (no downloads)."""

from __future__ import annotations

import ast
import csv
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    ElectraConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    RobertaConfig,
)

from pruning.data import DataSpec
from pruning.models import ModelSpec, default_model_path, save_pruned

ARCHITECTURES = ("bert", "roberta", "distilbert", "electra")
# Set HEADSCOPE_TEST_DEVICE=cuda to run the tiny-model property tests on a GPU.
TEST_DEVICE = torch.device(os.environ.get("HEADSCOPE_TEST_DEVICE", "cpu"))


def tiny_config(
    arch: str, *, num_labels: int = 2, layers: int = 3, heads: int = 4
) -> PretrainedConfig:
    """A config of the given family: ``layers`` x ``heads``, hidden 32."""
    common = {"vocab_size": 120, "num_labels": num_labels, "pad_token_id": 0}
    if arch == "bert":
        return BertConfig(
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=64,
            max_position_embeddings=64,
            **common,
        )
    if arch == "roberta":
        return RobertaConfig(
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=64,
            max_position_embeddings=70,
            bos_token_id=1,
            eos_token_id=2,
            **common,
        )
    if arch == "electra":
        return ElectraConfig(
            hidden_size=32,
            embedding_size=24,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=64,
            max_position_embeddings=64,
            **common,
        )
    if arch == "distilbert":
        return DistilBertConfig(
            dim=32,
            n_layers=layers,
            n_heads=heads,
            hidden_dim=64,
            max_position_embeddings=64,
            **common,
        )
    raise ValueError(arch)


def build_tiny_model(
    arch: str,
    *,
    seed: int = 0,
    attn: str = "sdpa",
    num_labels: int = 2,
    layers: int = 3,
    heads: int = 4,
) -> torch.nn.Module:
    """A randomly initialised tiny classifier in eval mode."""
    torch.manual_seed(seed)
    config = tiny_config(arch, num_labels=num_labels, layers=layers, heads=heads)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)
    model.eval()
    return model.to(TEST_DEVICE)


def random_inputs(seed: int = 0, batch: int = 3, length: int = 9) -> dict[str, torch.Tensor]:
    """Random token ids with a padded batch (rows of different lengths)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 120, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        cut = length - 2 * row
        attention_mask[row, max(cut, 2) :] = 0
        input_ids[row, max(cut, 2) :] = 0
    return {
        "input_ids": input_ids.to(TEST_DEVICE),
        "attention_mask": attention_mask.to(TEST_DEVICE),
    }


@pytest.fixture(params=ARCHITECTURES)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny_model_factory() -> Callable[..., torch.nn.Module]:
    return build_tiny_model


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test stores runs and models in a temporary HEADSCOPE_HOME.

    An independent MonkeyPatch: a test calling ``monkeypatch.undo()`` cannot undo this one.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(tmp_path_factory.mktemp("headscope_home")))
    yield
    patch.undo()


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A private local Ray instance for the whole session: 2 CPUs, no dashboard.

    Yields the ``ExecutorSettings`` that point at it (``kind="ray"``, ``address="local"``; the
    instance is already connected, so every ``connect`` reuses it). Skipped without the extra.
    """
    pytest.importorskip("ray", reason="needs the optional extra: pip install 'headscope[ray]'")
    import ray

    from pruning.executors import ExecutorSettings, connect

    settings = ExecutorSettings(kind="ray", address="local", num_cpus=2)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 2**20,
    )
    connect(settings)
    yield settings
    ray.shutdown()


POSITIVE = ("great", "wonderful", "superb", "lovely", "brilliant", "excellent")
NEGATIVE = ("awful", "terrible", "dreadful", "boring", "horrible", "clumsy")
NOUNS = ("film", "movie", "story", "plot", "cast", "ending")


@functools.lru_cache(maxsize=1)
def real_tokenizer() -> PreTrainedTokenizerBase:
    """The default encoder's tokenizer (vocabulary 30,522), loaded once per session."""
    return AutoTokenizer.from_pretrained(default_model_path())


def small_bert(
    label_names: tuple[str, ...] = ("negative", "positive"), seed: int = 0
) -> BertForSequenceClassification:
    """A random 2-layer, 4-head, hidden-32 BERT classifier sized for the real tokenizer."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    model = BertForSequenceClassification(config)
    model.eval()
    return model


def save_small_bert(folder: Path, label_names: tuple[str, ...] = ("negative", "positive")) -> Path:
    """A tiny local model folder (weights + the real tokenizer) loadable as ModelSpec.local."""
    return save_pruned(small_bert(label_names), real_tokenizer(), folder)


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` trivially separable (text, label) rows: positive words vs negative words."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        words = POSITIVE if i % 2 == 0 else NEGATIVE
        pick = torch.randint(0, len(words), (2,), generator=generator).tolist()
        noun = NOUNS[int(torch.randint(0, len(NOUNS), (1,), generator=generator))]
        text = f"a {words[pick[0]]} {noun}, really {words[pick[1]]}"
        rows.append((f"{text} #{i}", "positive" if i % 2 == 0 else "negative"))
    return rows


def write_csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")
) -> Path:
    """Write rows as a CSV file and return its path."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def prepared_tiny_setup(folder: Path, rows: int = 120) -> tuple[ModelSpec, DataSpec]:
    """A tiny local BERT prepared (2 training steps) on a sentiment CSV of ``rows`` rows.

    Returns the model and data specs whose prepared entry now sits in the model store.
    """
    from pruning.prepare import prepare_model
    from pruning.train import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    model = ModelSpec.local(save_small_bert(folder / "tiny-bert"))
    csv_path = write_csv(folder / "reviews.csv", sentiment_rows(rows))
    data = DataSpec(name="csv", path=str(csv_path))
    prepare_model(model, data, TrainConfig(max_steps=2, batch_size=16), device="cpu")
    return model, data


@pytest.fixture
def server_navigation_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run pages as a server does after its first request: through app.py's st.navigation.

    AppTest resets Streamlit's legacy ``pages/`` flag before every run, so each run would start
    as a legacy multipage run and pages.support.common.ensure_app_navigation would rerun it
    (losing the widget interaction under test). A server sets the flag once, on its first
    request; that path is covered by tests/test_browser.py. App tests use it through ``pytestmark``.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


APP_PY = Path(__file__).resolve().parents[1] / "app.py"


@dataclass(frozen=True)
class AppPage:
    """One ``st.Page(...)`` entry of app.py, as written in its source."""

    script: str
    default: bool
    url_path: str | None


def app_pages() -> list[AppPage]:
    """The pages app.py registers with ``st.navigation``, read from its source (nothing runs).

    Every entry must give its script, ``default`` and ``url_path`` as literals, as app.py does.
    """
    literal_keywords = ("default", "url_path")
    pages: list[AppPage] = []
    for node in ast.walk(ast.parse(APP_PY.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "Page":
            continue
        # literal_eval raises ValueError on anything but a literal: this reader would misread it.
        keywords = {
            k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg in literal_keywords
        }
        pages.append(
            AppPage(
                script=str(ast.literal_eval(node.args[0])),
                default=keywords.get("default", False) is True,
                url_path=keywords.get("url_path"),
            )
        )
    return pages


@pytest.fixture
def no_autoprepare(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard does not start preparing the default classifier on its own."""
    monkeypatch.setenv("HEADSCOPE_AUTOPREPARE", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the private Ray instance carry the ``ray`` marker (``-m "not ray"`` skips them)."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
