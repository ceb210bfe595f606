"""Pure figure builders: numpy arrays and dataclasses in, plotly figures out.

Nothing here touches Streamlit, the disk or global state. Head masks are bool
``(n_layers, n_heads)`` arrays with **True = keep**.
"""

from __future__ import annotations

from viz.compare import (
    MaskOverlap,
    build_agreement_heatmap,
    build_mask_comparison,
    mask_overlap,
)
from viz.heads import build_layer_counts, build_mask_heatmap
from viz.metrics import build_metric_deltas

__all__ = [
    "MaskOverlap",
    "build_agreement_heatmap",
    "build_layer_counts",
    "build_mask_comparison",
    "build_mask_heatmap",
    "build_metric_deltas",
    "mask_overlap",
]

from viz.search import (
    SearchTrace,
    build_cost_chart,
    build_random_vs_search,
    build_search_mask,
    build_search_progress,
    parse_search_trace,
    search_iterations,
)

__all__ += [
    "SearchTrace",
    "build_cost_chart",
    "build_random_vs_search",
    "build_search_mask",
    "build_search_progress",
    "parse_search_trace",
    "search_iterations",
]
