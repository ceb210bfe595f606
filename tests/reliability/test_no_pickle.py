"""Nothing in HeadScope unpickles, runs remote code or evaluates data.

A scan of every Python file of the project (app.py, pages/, pruning/, cache/, viz/, bench/)
parses the code (so strings and comments, like the ones in this file, never match) and refuses:
pickle-family imports (pickle, cPickle, dill, cloudpickle, joblib, shelve, marshal), their load
calls, ``pandas.read_pickle``, ``torch.load`` without ``weights_only=True``, any
``weights_only=`` other than True (``from_pretrained`` accepts one too), ``numpy.load`` without
``allow_pickle=False``, ``trust_remote_code`` other than False, ``yaml.load`` / ``unsafe_load``,
and the builtins ``eval`` / ``exec``. The scanner itself is tested on synthetic sources.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PARTS = ("app.py", "pages", "pruning", "cache", "viz", "bench")
PICKLE_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"})
UNSAFE_MODULES = PICKLE_MODULES | {"shelve", "marshal"}
LOADERS = frozenset({"load", "read_pickle", "unsafe_load"})


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain, else ``""``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loading(source: str, filename: str = "<source>") -> list[str]:
    """Every forbidden import or call in ``source``, as ``"file:line: what"``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            problems = [
                f"import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in UNSAFE_MODULES
            ]
        elif isinstance(node, ast.ImportFrom):
            problems = _import_from_problems(node)
        elif isinstance(node, ast.Call):
            problems = _call_problems(node)
        else:
            continue
        found += [f"{filename}:{node.lineno}: {problem}" for problem in problems]
    return found


def _import_from_problems(node: ast.ImportFrom) -> list[str]:
    module = (node.module or "").split(".")[0]
    names = {alias.name for alias in node.names}
    if module in UNSAFE_MODULES:
        return [f"from {node.module} import {sorted(names)}"]
    if module in ("torch", "numpy", "pandas", "yaml") and names & LOADERS:
        return [f"from {node.module} import {sorted(names)}"]
    return []


def _call_problems(call: ast.Call) -> list[str]:
    name = _dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    problems = []
    if name in ("eval", "exec"):
        problems.append(f"{name}()")
    if name.split(".", 1)[0] in PICKLE_MODULES and last in ("load", "loads", "Unpickler"):
        problems.append(f"{name}()")
    if last == "read_pickle":
        problems.append(f"{name}()")
    if name == "torch.load" and not _is_constant(_keyword(call, "weights_only"), True):
        problems.append("torch.load() without weights_only=True")
    allow_pickle = _keyword(call, "allow_pickle")
    if name in ("np.load", "numpy.load") and not _is_constant(allow_pickle, False):
        problems.append(f"{name}() without allow_pickle=False")
    if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
        problems.append(f"{name}() (use yaml.safe_load)")
    weights_only = _keyword(call, "weights_only")
    if weights_only is not None and not _is_constant(weights_only, True):
        problems.append(f"{name}(weights_only=...) other than True")
    remote = _keyword(call, "trust_remote_code")
    if remote is not None and not _is_constant(remote, False):
        problems.append(f"{name}(trust_remote_code=...) other than False")
    return problems


def project_files() -> list[Path]:
    files: list[Path] = []
    for part in PROJECT_PARTS:
        path = ROOT / part
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_the_project_loads_nothing_unsafely() -> None:
    files = project_files()
    assert len(files) > 50 and ROOT / "pruning/models.py" in files  # the scan sees the code
    found = [
        problem
        for path in files
        for problem in unsafe_loading(
            path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
        )
    ]
    assert not found, (
        "Unsafe loading (HeadScope never unpickles: JSON and safetensors only, "
        "trust_remote_code stays off):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import pickle as pk",
        "import cloudpickle",
        "import dill.settings",
        "import joblib",
        "import shelve",
        "import marshal",
        "from pickle import loads",
        "from joblib import load",
        "from torch import load",
        "from numpy import load",
        "from pandas import read_pickle",
        "pickle.load(handle)",
        "pickle.loads(data)",
        "joblib.load('model.joblib')",
        "frame = pd.read_pickle(path)",
        "torch.load(path)",
        "torch.load(path, map_location='cpu')",
        "torch.load(path, weights_only=False)",
        "torch.load(path, weights_only=flag)",
        "np.load(path)",
        "numpy.load(path, allow_pickle=True)",
        "AutoModel.from_pretrained(name, trust_remote_code=True)",
        "AutoModel.from_pretrained(name, trust_remote_code=user_choice)",
        "AutoModel.from_pretrained(name, weights_only=False)",
        "yaml.load(text)",
        "yaml.unsafe_load(text)",
        "value = eval(text)",
        "exec(code, {})",
        "def f():\n    return eval(row['formula'])",
    ],
)
def test_each_forbidden_pattern_is_found(source: str) -> None:
    assert unsafe_loading(source, "synthetic.py")


@pytest.mark.parametrize(
    "source",
    [
        "torch.load(path, weights_only=True)",
        "np.load(path, allow_pickle=False)",
        "AutoModel.from_pretrained(name, trust_remote_code=False)",
        "model.eval()",
        "json.loads(text)",
        "safetensors.torch.load_file(path)",
        "yaml.safe_load(text)",
        "text = 'import pickle; pickle.load(f); eval(x)'  # a string is no code",
        "# torch.load(path)",
    ],
)
def test_safe_code_is_not_flagged(source: str) -> None:
    assert unsafe_loading(source, "synthetic.py") == []


def test_a_reintroduced_pattern_in_a_project_file_fails_the_scan() -> None:
    models = (ROOT / "pruning/models.py").read_text(encoding="utf-8")
    assert unsafe_loading(models) == []
    tampered = models.replace("trust_remote_code=False", "trust_remote_code=True", 1)
    assert tampered != models and unsafe_loading(tampered)
