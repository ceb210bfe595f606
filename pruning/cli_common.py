"""Helpers of the ``headscope`` command line: argument parsing, progress bars and output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from tqdm import tqdm

from pruning.models import ModelSpec

if TYPE_CHECKING:
    from pruning.data import DataSpec
    from pruning.executors import ExecutorSettings
    from pruning.train import TrainConfig, TrainEvent

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
_COMPRESSED = (".bz2", ".gz", ".xz")


def parse_model_arg(value: str) -> ModelSpec:
    """``default`` -> the embedded encoder, ``hub:ID`` -> a hub model, a folder -> a local model.

    Raises:
        FileNotFoundError: when the value is neither of those and no such folder exists.
    """
    text = value.strip()
    if text in ("", "default"):
        return ModelSpec()
    if text.startswith("hub:"):
        model_id = text.removeprefix("hub:").strip()
        revision = None
        if "@" in model_id:
            model_id, revision = model_id.split("@", 1)
        return ModelSpec.hub(model_id, revision=revision or None)
    path = Path(text).expanduser()
    if path.exists():
        return ModelSpec.local(path)
    raise FileNotFoundError(
        f"Model {value!r} not found: give 'default', the path of a model folder, or hub:ID "
        "(e.g. hub:bert-base-uncased, needs network)."
    )


def is_table_path(value: str) -> bool:
    """True when ``value`` names a CSV/TSV/TXT file (optionally .bz2/.gz/.xz compressed)."""
    name = value.lower()
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    return name.endswith(TABLE_SUFFIXES)


def parse_data_arg(
    value: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
    max_rows: int | None = None,
) -> DataSpec:
    """``rotten_tomatoes`` -> the offline default, a ``.csv``/``.tsv``/``.txt`` path -> a CSV
    dataset with the given columns, anything else -> a Hugging Face dataset name.

    Raises:
        FileNotFoundError: for a table path that does not exist.
        ValueError: for a name :class:`pruning.data.DataSpec` rejects.
    """
    from pruning.data import DEFAULT_DATASET, DataSpec

    text = value.strip()
    if text in ("", DEFAULT_DATASET):
        return DataSpec(seed=seed, max_rows=max_rows)
    if is_table_path(text) or Path(text).expanduser().is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Data file {path} does not exist; give the path of a CSV/TSV file with a "
                f"{text_column!r} and a {label_column!r} column."
            )
        return DataSpec(
            name="csv",
            path=str(path),
            text_column=text_column,
            label_column=label_column,
            seed=seed,
            max_rows=max_rows,
        )
    return DataSpec(
        name=text,
        text_column=text_column,
        label_column=label_column,
        seed=seed,
        max_rows=max_rows,
    )


# Steps of a fraction bar: the fraction done is shown to 0.1% (the bar itself shows percent).
FRACTION_STEPS = 1000
# Percentage, elapsed time and time left; no rate, since "fractions per second" mean nothing.
FRACTION_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"


def fraction_bar(desc: str, *, enabled: bool = True, file: TextIO | None = None) -> tqdm[Any]:
    """A tqdm bar for work that reports the fraction it has done; move it with
    :func:`show_fraction`.

    Args:
        desc: what is running, shown before the percentage.
        enabled: False gives a bar that draws nothing.
        file: where to draw; None is tqdm's default, stderr.
    """
    return tqdm(
        total=FRACTION_STEPS,
        desc=desc,
        disable=not enabled,
        file=file,
        bar_format=FRACTION_BAR_FORMAT,
    )


def show_fraction(bar: tqdm[Any], fraction: float, message: str) -> None:
    """Move ``bar`` to ``fraction`` of the work (0 to 1, clipped) and show ``message`` after it."""
    bar.n = int(min(max(fraction, 0.0), 1.0) * FRACTION_STEPS)
    bar.set_postfix_str(message, refresh=True)


def show_event(bar: tqdm[Any], event: Any, prefix: str = "", width: int = 60) -> None:
    """A trace event on ``bar``: notes (``data["note"]``, e.g. a search's expected time) are
    printed in full above the bar; every event moves it, with the message cut to ``width``."""
    if event.data.get("note") and not bar.disable:
        bar.write(f"{prefix}{event.message}", file=bar.fp)
    show_fraction(bar, event.fraction, f"{prefix}{event.message}"[:width])


class TrainProgress:
    """A tqdm bar on stderr fed by :class:`pruning.train.TrainEvent` callbacks."""

    def __init__(self, *, enabled: bool = True, description: str = "fine-tuning") -> None:
        self._enabled = enabled
        self._description = description
        self._bar: tqdm[Any] | None = None

    def __call__(self, event: TrainEvent) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                total=event.total_steps,
                desc=self._description,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0,
            )
        self._bar.set_postfix(loss=f"{event.loss:.3f}", lr=f"{event.lr:.1e}", refresh=False)
        self._bar.update(event.step - self._bar.n)

    def close(self) -> None:
        """Finish the bar (safe to call when it never started)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def emit_json(data: Any, stream: TextIO | None = None) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=stream or sys.stdout)


def format_metrics(metrics: dict[str, Any]) -> str:
    """One line: accuracy, MCC, macro-F1, loss and the number of texts."""
    return (
        f"accuracy {metrics['accuracy']:.2%}  MCC {metrics['mcc']:.3f}  "
        f"macro-F1 {metrics['macro_f1']:.3f}  loss {metrics['loss']:.3f}  "
        f"({int(metrics['n_examples']):,} texts)"
    )


def one_line(error: BaseException) -> str:
    """An exception's message on one line (newlines folded), without the traceback."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message.strip("'\"") if isinstance(error, KeyError) else message


def add_model_args(parser: argparse.ArgumentParser, *, prepared: bool) -> None:
    group = parser.add_mutually_exclusive_group() if prepared else parser
    group.add_argument(
        "--model",
        default="default",
        help="'default' (embedded all-MiniLM-L6-v2), a model folder, or hub:ID[@revision]",
    )
    if prepared:
        group.add_argument(
            "--prepared", metavar="KEY", help="a prepared model's key (or a unique prefix of it)"
        )


def add_data_args(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    parser.add_argument(
        "--data",
        default=default,
        help="'rotten_tomatoes' (offline default), a .csv/.tsv/.txt file, or a Hugging Face "
        "name such as glue/sst2",
    )
    parser.add_argument("--text-column", default="text", help="text column of a CSV file")
    parser.add_argument("--label-column", default="label", help="label column of a CSV file")
    parser.add_argument("--max-rows", type=int, help="use at most this many rows (quick runs)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the split assignment")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--ray-address``, ``--ray-workers`` (defaults: HEADSCOPE_* variables)."""
    group = parser.add_argument_group("executor (see README: Scale-out)")
    group.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="local: this process (default, or $HEADSCOPE_EXECUTOR); ray: sweeps as Ray tasks "
        "and A* candidate evaluations on Ray actors (needs pip install 'headscope[ray]')",
    )
    group.add_argument(
        "--ray-address",
        help="auto (a running cluster, the default), local (a private instance), or host:port",
    )
    group.add_argument(
        "--ray-workers", type=int, help="Ray actors for A* evaluations (default: one per CPU)"
    )


def executor_from_args(args: argparse.Namespace) -> ExecutorSettings:
    """The executor of ``--executor`` and friends, falling back to the environment.

    Raises:
        ValueError: a malformed address or worker count (the message says how to fix it).
    """
    from pruning.executors import ExecutorSettings, settings_from_env

    base = settings_from_env()
    kind = getattr(args, "executor", None) or base.kind
    address = getattr(args, "ray_address", None) or base.address
    workers = getattr(args, "ray_workers", None)
    return ExecutorSettings(
        kind=kind, address=address, workers=workers if workers is not None else base.workers
    )


# --flag -> TrainConfig field; defaults and help come from the dataclass, so they cannot drift.
TRAIN_FLAGS = {
    "--epochs": "epochs",
    "--lr": "lr",
    "--batch-size": "batch_size",
    "--max-length": "max_length",
    "--warmup-ratio": "warmup_ratio",
    "--weight-decay": "weight_decay",
    "--max-steps": "max_steps",
    "--grad-clip": "grad_clip",
    "--seed": "seed",
}


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    from pruning.train import TrainConfig

    specs = {spec.name: spec for spec in dataclasses.fields(TrainConfig)}
    for flag, name in TRAIN_FLAGS.items():
        spec = specs[name]
        kind = float if isinstance(spec.default, float) else int
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=spec.default,
            help=f"{spec.metadata['help']} (default: {spec.default})",
        )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig that the training flags of ``headscope prepare`` name."""
    from pruning.train import TrainConfig

    return TrainConfig(**{name: getattr(args, name) for name in TRAIN_FLAGS.values()})


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2.

    argparse prints the whole usage block before the error; a wrong option should read like every
    other HeadScope input error (``headscope prune: error: ...``). Subcommands inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = OneLineErrorParser(
        prog="headscope",
        description="Prepare, evaluate and time BERT-family classifiers (HeadScope).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prepare = commands.add_parser(
        "prepare", help="fine-tune an encoder on a dataset and store it (cached)"
    )
    add_model_args(prepare, prepared=False)
    add_data_args(prepare, default="rotten_tomatoes")
    _add_train_args(prepare)
    prepare.add_argument("--force", action="store_true", help="retrain even when stored")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(prepare)

    evaluate = commands.add_parser("evaluate", help="accuracy, MCC, F1 and loss on a split")
    add_model_args(evaluate, prepared=True)
    add_data_args(evaluate, default=None)
    evaluate.add_argument("--split", choices=("test", "validation", "train"), default="test")
    evaluate.add_argument("--limit", type=int, help="evaluate a stratified sample of N texts")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--max-length", type=int, default=128)
    add_common_args(evaluate)

    latency = commands.add_parser("latency", help="forward latency, parameters and FLOPs")
    add_model_args(latency, prepared=True)
    latency.add_argument("--batch-size", type=int, default=1)
    latency.add_argument("--seq-len", type=int, default=128)
    latency.add_argument("--repeats", type=int, default=20)
    latency.add_argument("--warmup", type=int, default=3)
    latency.add_argument("--threads", type=int, help="CPU threads (default: torch's setting)")
    add_common_args(latency)

    models = commands.add_parser("models", help="list prepared models")
    models.add_argument("--json", action="store_true", help="print the list as JSON")

    info = commands.add_parser("info", help="versions, device and storage locations")
    info.add_argument("--json", action="store_true", help="print as JSON")

    from pruning.cli_assets import add_assets_command
    from pruning.cli_runs import add_run_commands

    add_run_commands(commands)
    from pruning.cli_bench import add_bench_commands
    from pruning.cli_explain import add_explain_command

    add_bench_commands(commands)
    add_explain_command(commands)
    add_assets_command(commands)
    from pruning.cli_attention import add_attention_command

    add_attention_command(commands)
    from pruning.cli_embeddings import add_embeddings_command

    add_embeddings_command(commands)
    from pruning.cli_compare import add_compare_command
    from pruning.cli_report import add_report_command

    add_compare_command(commands)
    add_report_command(commands)
    return parser


def data_spec_from_args(args: argparse.Namespace) -> DataSpec:
    """The DataSpec that --data, --text-column, --label-column, --data-seed, --max-rows name."""
    return parse_data_arg(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        seed=args.data_seed,
        max_rows=args.max_rows,
    )


def configure_logging(verbose: bool) -> None:
    """WARNING-level logging to stderr (INFO with -v); transformers' notices quiet unless -v."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        from transformers.utils import logging as hf_logging

        # The "newly initialized classifier" notice is expected when preparing a model.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
