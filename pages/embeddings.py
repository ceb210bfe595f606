"""Embeddings: every head's queries and keys in one 2-D picture, AttentionViz-style.

For a set of sentences the page captures each token's query and key vector per head, projects
each head's joint set to 2-D and draws a layer x head grid of small scatter plots, original and
one pruned run side by side (removed heads greyed), plus one head zoomed with the token on hover.
PCA is computed right here (it is instant); UMAP and t-SNE run as background jobs, one per
model, that fill the grid head by head (:mod:`pages.support.embeddings_work`). Captures and
projections are cached on disk, so switching views never recomputes and a finished grid reopens
at once.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    require_prepared,
    run_store,
)
from pages.support.embeddings_work import (
    embedding_work,
    job_id,
    job_payload,
    make_ref,
    partial_grid,
)
from pages.support.figures import show_chart
from pruning.embedding_cache import EmbeddingRequest, ProjectionCache, compute_grid, load_points
from pruning.embeddings import DEFAULT_MAX_POINTS, JointPoints
from pruning.projections import PROJECTION_NAMES, PROJECTIONS, EmbeddingGrid
from pruning.run_models import ModelRef, load_ref, model_refs, ref_fingerprint
from viz.embeddings import COLOUR_BY, build_embedding_grid, build_head_embedding, embedding_cell_px

MAX_SENTENCES = 50
DEFAULT_SENTENCES = 20
REQUEST = "embeddings_request"  # the request shown: {"refs": [...], "request": {...}}
SOURCES = ("A sample of the test split", "My own sentences")
COSTS = {
    "umap": "UMAP takes 30-60 s per model for 72 heads of 1,000 points on a 2-core CPU; the "
    "server's first UMAP adds 10-60 s once (umap-learn loads and compiles).",
    "tsne": "t-SNE takes about 3 s per head of 1,000 points on a CPU (about 4 minutes for 72).",
}


@st.cache_resource(show_spinner=False, max_entries=2)
def loaded_model(row: tuple[str, str, str]) -> Any:
    return load_ref(make_ref(row))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_points(row: tuple[str, str, str], request_json: str) -> JointPoints:
    """The request's points: from the disk cache, else captured (loading the model once)."""
    ref, request = make_ref(row), EmbeddingRequest.from_dict(json.loads(request_json))
    cache = ProjectionCache()
    stored = cache.get_points(request.points_key(ref_fingerprint(ref)))
    if stored is not None:
        return stored
    return load_points(ref, request, cache=cache, loaded=loaded_model(row))


@st.cache_data(show_spinner=False, max_entries=16)
def pca_grid(row: tuple[str, str, str], request_json: str) -> EmbeddingGrid:
    request = EmbeddingRequest.from_dict(json.loads(request_json))
    points = cached_points(row, points_json(request))
    return compute_grid(make_ref(row), request, cache=ProjectionCache(), points=points)


def row_of(ref: ModelRef) -> tuple[str, str, str]:
    return (ref.kind, ref.key, ref.label)


def points_json(request: EmbeddingRequest) -> str:
    """The request without its projection: points do not depend on it."""
    return json.dumps({**request.to_dict(), "method": "pca", "params": {}}, sort_keys=True)


def stored_grid(ref: ModelRef, request: EmbeddingRequest) -> EmbeddingGrid | None:
    """A UMAP / t-SNE grid from the disk cache, complete or partial (a few ms)."""
    return ProjectionCache().get_grid(request.grid_key(ref_fingerprint(ref)))


def sample_texts(count: int, seed: int) -> list[str] | None:
    """A seeded sample of ``count`` test-split texts (None with an error when unreadable)."""
    try:
        split = cached_dataset(current_specs()[1]).split("test")
    except (OSError, ValueError) as error:
        st.error(f"The test split cannot be read ({error}); type your own sentences instead.")
        return None
    return list(split.subset(count, seed=seed).texts)


def request_form(refs: list[ModelRef]) -> dict[str, Any] | None:
    """Models, sentences, cap, seed and normalisation; the request to show (or None)."""
    runs = refs[1:]
    source = st.radio("Sentences", SOURCES, horizontal=True, key="embeddings-source")
    with st.form("embeddings-form"):
        cols = st.columns([3, 2])
        run = cols[0].selectbox(
            "Pruned run (shown beside the original)",
            [None, *range(len(runs))],
            index=1 if runs else 0,
            format_func=lambda i: "none: the original only" if i is None else runs[i].label,
        )
        if source == SOURCES[0]:
            count = cols[1].number_input("Test texts", 1, MAX_SENTENCES, DEFAULT_SENTENCES, 5)
            typed = ""
        else:
            count = DEFAULT_SENTENCES
            typed = st.text_area(
                f"One sentence per line (up to {MAX_SENTENCES})",
                placeholder="The plot was thin but the acting was wonderful.",
            )
        settings = st.columns(3)
        cap = settings[0].number_input(
            "Points per head (cap)",
            100,
            5000,
            DEFAULT_MAX_POINTS,
            100,
            help="Tokens are sampled (seeded) so that each head shows at most this many points: "
            "every sampled token gives its query and its key.",
        )
        seed = settings[1].number_input("Seed", 0, 2**31 - 1, 0, 1)
        normalise = settings[2].checkbox(
            "Align keys to queries",
            value=True,
            help="AttentionViz's normalisation: move the keys so that their centre is the "
            "queries' centre and give both the same mean length. The head's attention is "
            "unchanged; without it queries and keys often form two far-apart clouds.",
        )
        pressed = st.form_submit_button("Show embeddings", type="primary")
    if not pressed and REQUEST in st.session_state:
        return st.session_state[REQUEST]
    if not pressed and source != SOURCES[0]:
        return None
    if source == SOURCES[0]:
        sentences = sample_texts(int(count), int(seed))
        if sentences is None:
            return None
    else:
        sentences = [line.strip() for line in typed.splitlines() if line.strip()]
    if not sentences:
        st.warning("Type at least one sentence (one per line), then press Show embeddings again.")
        return None
    if len(sentences) > MAX_SENTENCES:
        st.info(f"Only the first {MAX_SENTENCES} of {len(sentences)} sentences are used.")
    chosen = [refs[0]] + ([] if run is None else [runs[run]])
    request = {
        "refs": [[r.kind, r.key, r.label] for r in chosen],
        "request": EmbeddingRequest.make(
            sentences[:MAX_SENTENCES], max_points=int(cap), seed=int(seed), normalise=normalise
        ).to_dict(),
    }
    st.session_state[REQUEST] = request
    return request


def grid_figure(
    ref: ModelRef, points: JointPoints, method: str, coords: Any, projected: Any, cell_px: int
) -> Any:
    title = f"{ref.label} · {PROJECTION_NAMES[method]}"
    kinds = points.sample.point_kinds()
    return build_embedding_grid(
        coords, kinds, points.present, projected, title=title, cell_px=cell_px
    )


def draw_grids(
    refs: list[ModelRef], points: dict[str, JointPoints], grids: dict[str, Any], method: str
) -> None:
    """Each model's grid, side by side or one above the other."""
    stacked = st.session_state.get("embeddings-layout") == "One above the other"
    n_heads = next(iter(points.values())).grid[1]
    cell = embedding_cell_px(n_heads, 1150 if stacked or len(refs) == 1 else 560)
    slots = [st.container() for _ in refs] if stacked else st.columns(len(refs))
    for slot, ref in zip(slots, refs, strict=True):
        with slot:
            coords, projected = grids.get(ref.key, (None, None))
            if coords is None:
                st.info(f"{ref.label}: no {PROJECTION_NAMES[method]} yet.")
                continue
            figure = grid_figure(ref, points[ref.key], method, coords, projected, cell)
            show_chart(
                figure,
                f"embeddings-{method}-{ref.label}",
                width="content",
                key=f"grid-{method}-{ref.key}",
            )


def job_ids(refs: list[ModelRef], request: EmbeddingRequest) -> dict[str, str]:
    return {ref.key: job_id(job_payload(ref, request)) for ref in refs}


def start_jobs(refs: list[ModelRef], request: EmbeddingRequest) -> None:
    for ref in refs:
        payload = job_payload(ref, request)
        title = f"{PROJECTION_NAMES[request.method]} · {ref.label}"
        executor().submit(
            job_id(payload), "embeddings", embedding_work(payload), meta={"title": title}
        )


@st.fragment(run_every=1.5)
def live_grids(
    refs: list[ModelRef], points: dict[str, JointPoints], request: EmbeddingRequest
) -> None:
    """Progress, Cancel and the partial grids of running jobs; reruns the page when all end."""
    grids: dict[str, Any] = {}
    running = False
    for ref, identifier in zip(refs, job_ids(refs, request).values(), strict=True):
        stored = stored_grid(ref, request)
        job = executor().get(identifier)
        snap = None if job is None else job.snapshot()
        if job is not None and snap is not None and not snap.finished:
            running = True
            job_status(job, snap)
            grids[ref.key] = partial_grid(snap.events, points[ref.key])
        elif stored is not None:
            grids[ref.key] = (stored.coords, stored.projected)
        if snap is not None and snap.status == "failed":
            st.error(f"{ref.label}: {snap.error}. Check the settings, then press the button again.")
    draw_grids(refs, points, grids, request.method)
    if not running:
        st.rerun(scope="app")


def grids_view(
    refs: list[ModelRef], points: dict[str, JointPoints], request: EmbeddingRequest
) -> dict[str, Any]:
    """The grids of the chosen projection; returns each model's (coords, projected)."""
    method = request.method
    if method == "pca":
        with st.spinner("Projecting each head with PCA…"):
            request_json = json.dumps(request.to_dict(), sort_keys=True)
            grids = {r.key: pca_grid(row_of(r), request_json) for r in refs}
        shown = {key: (g.coords, g.projected) for key, g in grids.items()}
        draw_grids(refs, points, shown, method)
        return shown
    stored = {r.key: stored_grid(r, request) for r in refs}
    ids = job_ids(refs, request)
    active = [
        r
        for r in refs
        if (j := executor().get(ids[r.key])) is not None and not j.snapshot().finished
    ]
    if active:
        live_grids(refs, points, request)
        return {}
    partial = {key: g for key, g in stored.items() if g is not None}
    missing = [r for r in refs if r.key not in partial or not partial[r.key].complete]
    if missing:
        done = sum(partial[r.key].heads_done for r in missing if r.key in partial)
        verb = "Continue" if done else "Compute"
        if st.button(
            f"{verb} {PROJECTION_NAMES[method]} ({len(missing)} model(s))", type="primary"
        ):
            start_jobs(missing, request)
            st.rerun()
        st.caption(COSTS[method] + " Results are cached: a finished grid reopens at once.")
    shown = {key: (g.coords, g.projected) for key, g in partial.items()}
    draw_grids(refs, points, shown, method)
    return shown


@st.fragment
def head_view(
    refs: list[ModelRef], points: dict[str, JointPoints], shown: dict[str, Any], method: str
) -> None:
    """One head zoomed, per model side by side, with the token of each point on hover.

    A fragment: picking another head or colouring reruns only this part, not the grids.
    """
    st.subheader("One head, zoomed")
    n_layers, n_heads = next(iter(points.values())).grid
    cols = st.columns([1, 1, 3])
    layer = cols[0].selectbox("Layer", range(n_layers), format_func=lambda i: f"L{i}")
    head = cols[1].selectbox("Head", range(n_heads), format_func=lambda i: f"H{i}")
    colour_by = cols[2].radio(
        "Colour by",
        COLOUR_BY,
        horizontal=True,
        format_func=lambda c: {
            "kind": "query / key",
            "position": "token position",
            "token": "token",
        }[c],
    )
    for slot, ref in zip(st.columns(len(refs)), refs, strict=True):
        with slot:
            sample = points[ref.key].sample
            coords, projected = shown.get(ref.key, (None, None))
            if not points[ref.key].present[layer, head]:
                st.info(f"{ref.label}: L{layer} H{head} was removed by pruning.")
            elif coords is None or not projected[layer, head]:
                st.info(f"{ref.label}: L{layer} H{head} is not projected yet.")
            else:
                figure = build_head_embedding(
                    coords[layer, head],
                    sample.point_kinds(),
                    sample.point_tokens(),
                    sample.point_sentences(),
                    sample.point_positions(),
                    colour_by=colour_by,
                    title=f"{ref.label} · L{layer} H{head} · {PROJECTION_NAMES[method]}",
                )
                show_chart(
                    figure,
                    f"embedding-{method}-{ref.label}-L{layer}H{head}",
                    width="stretch",
                    key=f"head-{method}-{ref.key}",
                )


def main() -> None:
    st.title("Embeddings")
    st.caption(
        "Every token's query and key vectors of each head, projected together to 2-D "
        "(AttentionViz): queries (green) near keys (pink) are the pairs the head attends "
        "between. Compare the original classifier with a pruned run; removed heads are grey."
    )
    prepared = require_prepared()
    if prepared is None:
        return
    refs = model_refs(prepared, run_store())
    shown_request = request_form(refs)
    if shown_request is None:
        st.info("Pick the sentences and press Show embeddings.")
        return
    chosen = [make_ref(row) for row in shown_request["refs"]]
    cols = st.columns([3, 2])
    method = cols[0].radio(
        "Projection",
        PROJECTIONS,
        horizontal=True,
        format_func=PROJECTION_NAMES.get,
        key="embeddings-projection",
        help="PCA is instant; UMAP (the AttentionViz view) and t-SNE run in the background "
        "and are cached.",
    )
    if len(chosen) > 1:
        cols[1].radio(
            "Grids",
            ["Side by side", "One above the other"],
            horizontal=True,
            key="embeddings-layout",
        )
    request = EmbeddingRequest.from_dict(
        {**shown_request["request"], "method": method, "params": {}}
    )
    try:
        with st.spinner("Capturing queries and keys…"):
            points = {r.key: cached_points(row_of(r), points_json(request)) for r in chosen}
    except ValueError as error:
        st.error(f"{error}")
        return
    sample = next(iter(points.values())).sample
    st.caption(
        f"Each head shows {sample.n_points:,} points: {sample.n_tokens:,} tokens sampled (seed "
        f"{request.seed}) from the {sample.total_tokens:,} tokens of {sample.n_sentences} "
        f"sentences, each with its query and its key (cap: {request.max_points:,} points per "
        "head, so the cost stays bounded whatever the number of sentences)."
    )
    shown = grids_view(chosen, points, request)
    head_view(chosen, points, shown, method)


ensure_app_navigation()
main()
