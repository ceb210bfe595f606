"""Attention: what each head looks at in the original classifier and in a pruned run.

For one sentence (typed, or picked from the test split) the page shows, for the original and a
chosen run side by side: bertviz's head and model views (offline HTML, removed heads marked),
one head's token x token attention, and head-role maps over the layer x head grid (entropy, and
the share of attention on [CLS], [SEP], the token itself, the previous and the next token).
Models are loaded once per server (``st.cache_resource``); one capture per model, sentence and
length is cached (``st.cache_data``), so switching tabs, heads or roles never recomputes.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import streamlit as st
import streamlit.components.v1 as components

from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    require_prepared,
    run_store,
)
from pages.support.figures import show_chart
from pruning.capture import capture_sentences
from pruning.data import MAX_TEXT_CHARS, check_text
from pruning.head_roles import HEAD_ROLES, ROLE_HELP, SEP_TOKENS, head_roles
from pruning.predictor import model_max_length
from pruning.run_models import ModelRef, load_ref, model_refs, ref_fingerprint
from viz.attention import build_attention_heatmap, build_head_roles_figure, shared_range

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from pruning.models import LoadedClassifier

EXAMPLE = "The plot was thin, but the acting was wonderful."
PICK_LIMIT = 500  # test texts offered in the picker
BERTVIZ_MAX_TOKENS = 100  # beyond this the bertviz views turn into an unreadable, slow tangle
SIDE_BY_SIDE_TOKENS = 24  # longer sentences: the heatmaps go one per row to stay readable
TYPE, PICK = "Type one", "Pick from the test split"
Captured = tuple[str, dict[str, Any]]  # (model label, cached capture)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_model(fingerprint: str, _ref: ModelRef) -> LoadedClassifier:
    """The classifier a reference names, loaded once per server (keyed by its fingerprint)."""
    return load_ref(_ref)


@st.cache_resource
def capture_lock() -> threading.Lock:
    """Captures hook the shared models for a moment: one at a time across sessions."""
    return threading.Lock()


@st.cache_data(show_spinner=False, max_entries=64)
def cached_capture(
    fingerprint: str, text: str, max_length: int, _loaded: LoadedClassifier
) -> dict[str, Any]:
    """Tokens, attentions ``(L, H, T, T)`` (NaN for removed heads), present ``(L, H)``, the head
    roles and the untruncated token count of one sentence on one model."""
    tokenizer = _loaded.tokenizer
    with capture_lock():
        (capture,) = capture_sentences(
            _loaded.model, tokenizer, [text], max_length=max_length, with_qk=False
        )
    separators = {t for t in (tokenizer.sep_token, tokenizer.eos_token) if isinstance(t, str)}
    return {
        "tokens": list(capture.tokens),
        "attentions": capture.attentions.numpy(),
        "present": capture.present.numpy(),
        "roles": head_roles([capture], sep_tokens=separators or SEP_TOKENS),
        "n_tokens": len(tokenizer(text, truncation=False, verbose=False)["input_ids"]),
        "max_length": max_length,
    }


def run_ui(refs: list[ModelRef]) -> ModelRef | None:
    """The pruned run to compare with (newest first), or None when there is none."""
    if len(refs) < 2:
        st.info(
            "No pruning run of this classifier is stored yet, so the original is shown alone. "
            "Prune it on the Prune page (or with `headscope prune`) to compare."
        )
        return None
    index = st.selectbox(
        "Compare the original with",
        range(1, len(refs)),
        format_func=lambda i: refs[i].label,
        key="attention-run",
        help="Stored pruning runs of this classifier, newest first.",
    )
    return refs[int(index)]


def sentence_ui(prepared: PreparedModel) -> str | None:
    """The sentence typed or picked from the test split (None when the split is unreadable)."""
    source = st.radio("Sentence", [TYPE, PICK], horizontal=True, key="attention-source")
    if source == TYPE:
        return str(
            st.text_input(
                "Text",
                value=EXAMPLE,
                key="attention-text",
                help=f"Up to {MAX_TEXT_CHARS:,} characters; the model reads only its first "
                "tokens (a note says where it cuts).",
            )
        )
    try:
        split = cached_dataset(current_specs()[1]).split("test")
    except (OSError, ValueError) as error:
        st.error(f"The test split cannot be read ({error}); type a sentence instead.")
        return None
    if not len(split):
        st.warning("The test split is empty; type a sentence instead.")
        return None
    names = prepared.label_names
    picked = st.selectbox(
        "Test text (the label is the dataset's)",
        range(min(len(split), PICK_LIMIT)),
        format_func=lambda i: f"[{names[split.labels[i]]}] {split.texts[i][:110]}",
        key="attention-pick",
    )
    return str(split.texts[int(picked)])


def capture_for(ref: ModelRef, text: str) -> Captured | None:
    """The (cached) capture of ``text`` on one model, or None after showing why it failed."""
    try:
        with st.spinner(f"Reading the attention of {ref.label}…"):
            loaded = cached_model(ref_fingerprint(ref), ref)
            max_length = model_max_length(loaded.model, loaded.tokenizer)
            return ref.label, cached_capture(ref_fingerprint(ref), text, max_length, loaded)
    except ValueError as error:
        st.error(f"{ref.label}: {error}")
    except (OSError, RuntimeError) as error:
        st.error(
            f"Reading the attention of {ref.label} failed ({error}). Check that its files are "
            "intact (the Runs page lists runs) or pick another run; a shorter text may help."
        )
    return None


def bertviz_view(view: str, captured: list[Captured]) -> None:
    """bertviz's head or model view of each model, side by side; a note when unavailable."""
    try:
        from pruning.assets import load_asset_scripts
        from viz.bertviz_html import build_head_view_html, build_model_view_html
    except ImportError as error:
        st.info(
            f"The bertviz views need {error.name or 'a module'}, which this installation "
            "lacks; update HeadScope. The heatmap and head-role tabs work without them."
        )
        return
    try:
        scripts = load_asset_scripts()
    except OSError as error:
        st.info(f"{error} The heatmap and head-role tabs work without them.")
        return
    length = len(captured[0][1]["tokens"])
    if length > BERTVIZ_MAX_TOKENS:
        st.info(
            f"The bertviz views draw at most {BERTVIZ_MAX_TOKENS} tokens and this text has "
            f"{length}; shorten it, or use the per-head heatmap tab."
        )
        return
    build = build_head_view_html if view == "head" else build_model_view_html
    n_layers = captured[0][1]["present"].shape[0]
    height = min(150 + 24 * length, 2400) if view == "head" else 140 + 110 * n_layers
    # The model view's thumbnails have a fixed size: 12 heads need the full width, so the
    # models stack; the narrow head view sits side by side.
    slots = st.columns(len(captured)) if view == "head" else [st.container() for _ in captured]
    for slot, (label, data) in zip(slots, captured, strict=True):
        with slot:
            try:
                page = build(
                    data["tokens"], data["attentions"], data["present"], scripts, title=label
                )
            except ValueError as error:
                st.error(f"The {view} view of {label} cannot be drawn: {error}")
                continue
            components.html(page, height=height, scrolling=True)


def heatmap_view(captured: list[Captured]) -> None:
    """One head's query x key attention on each model, with a shared colour scale."""
    n_layers, n_heads = captured[0][1]["present"].shape
    absent = [label for label, d in captured[1:] if not d["present"].all()]
    pick = st.columns(2)
    layer = int(
        pick[0].selectbox(
            "Layer", range(n_layers), format_func=lambda i: f"L{i}", key="attention-layer"
        )
    )

    def head_label(head: int) -> str:
        gone = [label for label, d in captured if not d["present"][layer, head]]
        return f"H{head}" + (f" (removed in {', '.join(gone)})" if gone else "")

    head = int(
        pick[1].selectbox("Head", range(n_heads), format_func=head_label, key="attention-head")
    )
    if absent:
        st.caption("Heads a run removed are marked in the head list.")
    matrices = [d["attentions"][layer, head] for _, d in captured]
    bounds = shared_range(matrices)
    colour_range = None if bounds is None else (0.0, max(bounds[1], 1e-6))
    # Side by side a ~25-token grid already fills half the page; longer ones go one per row.
    wide = len(captured[0][1]["tokens"]) > SIDE_BY_SIDE_TOKENS
    slots = [st.container() for _ in captured] if wide else st.columns(len(captured))
    for index, (slot, (label, data)) in enumerate(zip(slots, captured, strict=True)):
        with slot:
            if not data["present"][layer, head]:
                st.info(
                    f"Head L{layer} H{head} was removed in {label}: it attends to nothing. "
                    "Pick another head to compare."
                )
                continue
            figure = build_attention_heatmap(
                data["tokens"],
                matrices[index],
                title=f"{label} · L{layer} H{head}",
                colour_range=colour_range,
            )
            show_chart(
                figure,
                f"attention-{label}-L{layer}H{head}",
                width="content",
                key=f"attention-heatmap-{index}",
            )


def roles_view(captured: list[Captured]) -> None:
    """One head role over the layer x head grid of each model, with a shared colour scale."""
    role = str(
        st.selectbox(
            "Head role",
            list(HEAD_ROLES),
            format_func=lambda name: HEAD_ROLES[name],
            key="attention-role",
        )
    )
    st.caption(
        f"{ROLE_HELP[role]} Mean over the sentence's query tokens; removed heads are grey with ×."
    )
    bounds = shared_range([d["roles"][role] for _, d in captured])
    for index, (column, (label, data)) in enumerate(
        zip(st.columns(len(captured)), captured, strict=True)
    ):
        with column:
            figure = build_head_roles_figure(
                data["roles"],
                data["present"],
                role,
                title=f"{label} · {HEAD_ROLES[role]}",
                label=HEAD_ROLES[role],
                colour_range=bounds,
            )
            show_chart(
                figure,
                f"head-roles-{role}-{label}",
                width="stretch",
                key=f"attention-roles-{index}",
            )


def truncation_note(captured: list[Captured]) -> None:
    data = captured[0][1]
    if data["n_tokens"] > data["max_length"]:
        st.info(
            f"The text has {data['n_tokens']} tokens but the model reads at most "
            f"{data['max_length']}: attention is shown for the first {data['max_length']} only."
        )


def main() -> None:
    st.title("Attention")
    st.caption(
        "What each attention head looks at, in the original classifier and a pruned run side by "
        "side: bertviz views, one head's attention over the tokens, and head roles over the "
        "layer x head grid."
    )
    prepared = require_prepared()
    if prepared is None:
        return
    refs = model_refs(prepared, run_store())
    run = run_ui(refs)
    text = sentence_ui(prepared)
    if text is None:
        return
    if not text.strip():
        st.warning("Type a sentence (or pick a test text) to see its attention.")
        return
    try:
        check_text(text, "show attention for")
    except ValueError as error:
        st.error(f"{error}")
        return
    captured = [c for ref in (refs[0], run) if ref is not None if (c := capture_for(ref, text))]
    if not captured:
        return
    truncation_note(captured)
    head, model, heatmap, roles = st.tabs(
        ["Head view", "Model view", "Per-head heatmap", "Head roles"]
    )
    with head:
        bertviz_view("head", captured)
    with model:
        bertviz_view("model", captured)
    with heatmap:
        heatmap_view(captured)
    with roles:
        roles_view(captured)


ensure_app_navigation()
main()
