"""Pruning methods: one module per method, each registering itself on import.

Pages, the CLI and benchmarks find methods through :func:`pruning.methods.base.list_methods` and
:func:`pruning.methods.base.get_method`, never by importing a method class. ``base`` imports no
method module, so importing this package (which ``base.load_builtin_methods`` does) has no cycle.
"""

from pruning.methods import astar as astar  # A* search and its three baselines
from pruning.methods import (
    attention_stats,
    autoattention,
    deepcuts,
    hisp,
    l0_gates,
    magnitude,
    manual,
    mcap,
    random_heads,
    unstructured,
)

__all__ = [
    "attention_stats",
    "autoattention",
    "deepcuts",
    "hisp",
    "l0_gates",
    "magnitude",
    "manual",
    "mcap",
    "random_heads",
    "unstructured",
]
