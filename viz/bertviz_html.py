"""bertviz head and model views that render offline and for pruned models.

bertviz 1.4.1 loads require.js, d3 and jQuery from a CDN and stacks the layers' attentions, so
offline its views are blank and a pruned model (unequal head counts) fails. These builders pad
removed heads back to the full ``(n_layers, n_heads)`` grid with zeros (no lines are drawn for
them), mark them (a caption, plus crossed-out heads in the drawing), and inline the scripts the
caller passes in (:func:`pruning.assets.load_asset_scripts`), so the document requests nothing
outside itself. Token text is user input: the parameters bertviz embeds in its script are
re-serialised with ``<``, ``>`` and ``&`` escaped, so no token can close the script element.
In the head view a line's opacity is divided by the number of selected heads that exist in the
layer (bertviz counts every selected head, which would fade the survivors of a pruned layer).

Script order matters: d3's UMD wrapper calls an anonymous ``define()`` when ``define.amd`` exists,
which require.js rejects for inline scripts ("Mismatched anonymous define()"). So d3 and jQuery
are inlined first (they become the globals ``d3`` and ``jQuery``), then require.js, then two
named modules hand the globals to bertviz's ``requirejs(['jquery', 'd3'], ...)``.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "REQUIRED_SCRIPTS",
    "build_head_view_html",
    "build_model_view_html",
    "removed_heads_caption",
]

REQUIRED_SCRIPTS = ("d3", "jquery", "requirejs")
_CDN_SCRIPT = re.compile(r"<script[^>]*\ssrc=[\"'][^\"']*[\"'][^>]*>\s*</script>", re.I)
_REQUIRE_CONFIG = re.compile(r"require\.config\(\s*\{.*?\}\s*\}\s*\);", re.S)
_PARAMS_MARK = "const params = "
_SOURCE_MAP = re.compile(r"^\s*//[#@]\s*sourceMappingURL=.*$", re.M)
_AMD_BRIDGE = (
    "define('d3', [], function () { return window.d3; });\n"
    "define('jquery', [], function () { return window.jQuery; });"
)
_STYLE = """
body { margin: 0; padding: 4px 8px; background: #fff; color: #222;
       font-family: 'Helvetica Neue', Helvetica, Arial, sans-serif; }
.hs-title { font-weight: 600; margin: 2px 0 4px; }
.hs-removed { color: #8a3b12; font-size: 13px; margin: 2px 0 6px; }
"""
# Runs after bertviz draws (a MutationObserver on the view's #vis): crosses out removed heads.
_MARK_MODEL_VIEW = """
(function () {
  var root = document.getElementById(ROOT_ID);
  var removed = REMOVED;
  var NS = 'http://www.w3.org/2000/svg';
  function add(parent, tag, attrs) {
    var el = document.createElementNS(NS, tag);
    for (var k in attrs) { el.setAttribute(k, attrs[k]); }
    parent.appendChild(el);
    return el;
  }
  function mark() {
    var svg = root.querySelector('#vis svg');
    if (!svg || svg.getAttribute('data-hs-marked')) { return; }
    var group = add(svg, 'g', {'class': 'hs-removed-heads', 'pointer-events': 'none'});
    removed.forEach(function (pair) {
      var box = svg.querySelector('#attn_background_' + pair[0] + '_' + pair[1]);
      if (!box) { return; }
      var x = +box.getAttribute('x'), y = +box.getAttribute('y');
      var w = +box.getAttribute('width'), h = +box.getAttribute('height');
      var cell = add(group, 'g', {'class': 'hs-removed-head',
                                  'data-layer': pair[0], 'data-head': pair[1]});
      add(cell, 'rect', {x: x + 2, y: y + 2, width: Math.max(w - 4, 0),
                         height: Math.max(h - 4, 0), fill: '#bbb', 'fill-opacity': 0.35,
                         stroke: '#999', 'stroke-dasharray': '3,2'});
      add(cell, 'line', {x1: x + 4, y1: y + 4, x2: x + w - 4, y2: y + h - 4,
                         stroke: '#999', 'stroke-width': 1.5});
      add(cell, 'line', {x1: x + w - 4, y1: y + 4, x2: x + 4, y2: y + h - 4,
                         stroke: '#999', 'stroke-width': 1.5});
    });
    svg.setAttribute('data-hs-marked', '1');
  }
  new MutationObserver(mark).observe(root.querySelector('#vis'), {childList: true});
  mark();
})();
"""
_MARK_HEAD_VIEW = """
(function () {
  var root = document.getElementById(ROOT_ID);
  var removed = REMOVED;
  var NS = 'http://www.w3.org/2000/svg';
  function add(parent, tag, attrs) {
    var el = document.createElementNS(NS, tag);
    for (var k in attrs) { el.setAttribute(k, attrs[k]); }
    parent.appendChild(el);
    return el;
  }
  function mark() {
    var svg = root.querySelector('#vis svg');
    var select = root.querySelector('#layer');
    if (!svg || !select || svg.getAttribute('data-hs-marked')) { return; }
    var heads = removed[+select.value] || [];
    var group = add(svg, 'g', {'class': 'hs-removed-heads', 'pointer-events': 'none'});
    heads.forEach(function (head) {
      var x = head * BOX, cell = add(group, 'g', {'class': 'hs-removed-head', 'data-head': head});
      add(cell, 'line', {x1: x + 2, y1: 2, x2: x + BOX - 2, y2: BOX - 2,
                         stroke: '#333', 'stroke-width': 2});
      add(cell, 'line', {x1: x + BOX - 2, y1: 2, x2: x + 2, y2: BOX - 2,
                         stroke: '#333', 'stroke-width': 2});
    });
    if (heads.length) {
      var note = add(group, 'text', {x: N_HEADS * BOX + 8, y: 15, fill: '#8a3b12',
                                      'font-size': '13px'});
      note.textContent = heads.length === N_HEADS ? 'all heads of this layer removed'
                                                  : 'crossed out: removed (no attention)';
    }
    svg.setAttribute('data-hs-marked', '1');
  }
  new MutationObserver(mark).observe(root.querySelector('#vis'), {childList: true});
  mark();
})();
"""
_CHECKBOX_SIZE = 20  # head_view.js draws one 20 px colour box per head at the top
# head_view.js divides each line's opacity by the number of selected heads; counting removed heads
# there would fade the surviving heads of a pruned layer, so only existing selected heads count.
_HEAD_VIEW_OPACITY = "return d / activeHeads()"
_HEAD_VIEW_OPACITY_PRESENT = (
    "return d / Math.max(1, config.headVis.filter(function (on, h) "
    "{ return on && HS_PRESENT[config.layer][h]; }).length)"
)


def _as_array(value: Any, name: str) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor or nested sequences."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array or tensor: {error}") from error


def _present_array(present: Any) -> np.ndarray:
    """``present`` as bool ``(n_layers, n_heads)``; raises ValueError for other shapes/values."""
    array = _as_array(present, "present")
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"present must be a bool (n_layers, n_heads) grid, True where the head exists; "
            f"got shape {tuple(array.shape)}."
        )
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            raise ValueError("present must hold booleans (True = the head exists), not scores.")
        array = array.astype(bool)
    return array


def removed_heads_caption(present: Any) -> str:
    """One line naming the removed heads per layer (0-based, as bertviz labels them).

    Args:
        present: bool ``(n_layers, n_heads)``, True where the head exists (True = keep).

    Returns:
        e.g. ``"Removed heads (shown empty): layer 1: 0, 3 · layer 4: all"``; ``""`` when no
        head is removed.
    """
    grid = _present_array(present)
    parts = []
    for layer, row in enumerate(grid):
        gone = [str(head) for head in np.flatnonzero(~row)]
        if len(gone) == row.size:
            parts.append(f"layer {layer}: all")
        elif gone:
            parts.append(f"layer {layer}: {', '.join(gone)}")
    return f"Removed heads (shown empty): {' · '.join(parts)}" if parts else ""


def _padded_inputs(
    tokens: Sequence[str], attentions: Any, present: Any
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Validated tokens, attentions ``(L, H, T, T)`` with removed heads zeroed, and ``present``."""
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokens must be a list of strings (one per position), not one string.")
    words = list(tokens)
    grid = _present_array(present)
    attn = _as_array(attentions, "attentions")
    if attn.ndim != 4:
        raise ValueError(
            "attentions must be (n_layers, n_heads, T, T) for one sentence (NaN for removed "
            f"heads, as pruning.capture.capture_sentences returns); got shape {tuple(attn.shape)}."
        )
    n_layers, n_heads, rows, cols = attn.shape
    if (n_layers, n_heads) != grid.shape:
        raise ValueError(
            f"attentions cover {n_layers} layers x {n_heads} heads but present is "
            f"{grid.shape[0]} x {grid.shape[1]}; pass the present mask of the same capture."
        )
    if rows != cols or rows != len(words) or not words:
        raise ValueError(
            f"attentions are {rows} x {cols} positions but there are {len(words)} tokens; pass "
            "the tokens of the same sentence (special tokens included)."
        )
    if not np.issubdtype(attn.dtype, np.number):
        raise ValueError(f"attentions must be numbers, got dtype {attn.dtype}.")
    values = np.where(grid[:, :, None, None], attn.astype(np.float64), 0.0)
    if not np.isfinite(values).all():
        raise ValueError(
            "attentions hold NaN or inf for heads that present marks as existing; pass the "
            "present mask of the same capture."
        )
    # Four decimals are below what a line's opacity can show and keep the HTML small.
    return words, np.round(values, 4), grid


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element (no '</script>', '<!--' or U+2028)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _inline_script(code: str) -> str:
    """A <script> element holding ``code``, which cannot close the element early."""
    code = _SOURCE_MAP.sub("", code)
    code = re.sub(r"</(script)", r"<\\/\1", code, flags=re.I)
    return f"<script>\n{code}\n</script>"


def _offline_body(bertviz_html: str) -> tuple[str, str]:
    """bertviz's HTML without CDN loading, with safely re-serialised, deterministic params.

    Returns:
        The HTML and the view's root element id (derived from the params, so deterministic).
    """
    body = _CDN_SCRIPT.sub("", bertviz_html)
    body = _REQUIRE_CONFIG.sub("", body, count=1)
    start = body.find(_PARAMS_MARK)
    if start < 0 or "cdnjs" in body:
        raise RuntimeError(
            "bertviz's HTML changed shape (no params or a CDN URL remains); HeadScope supports "
            "bertviz 1.4.1: pip install 'bertviz==1.4.1'."
        )
    start += len(_PARAMS_MARK)
    params, end = json.JSONDecoder().raw_decode(body, start)
    raw = body[start:end]
    old_id = str(params.pop("root_div_id"))
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    new_id = f"headscope-bertviz-{digest}"
    params["root_div_id"] = new_id
    # bertviz also pastes the raw params into a comment ("// HACK: PYTHON_PARAMS is ..."), where
    # a '</script>' token would still end the element: put the marker back there.
    rest = body[end:].replace(raw, "PYTHON_PARAMS")
    body = body[:start] + _script_json(params) + rest
    body = body.replace(f'id="{old_id}"', f'id="{new_id}"')
    if body.lower().count("<script") != body.lower().count("</script"):
        raise RuntimeError("bertviz's HTML still holds unescaped params; use bertviz 1.4.1.")
    return body, new_id


def _document(
    body: str, mark_script: str, scripts: Mapping[str, str], title: str | None, caption: str
) -> str:
    missing = [name for name in REQUIRED_SCRIPTS if not scripts.get(name)]
    if missing:
        raise ValueError(
            f"scripts lacks {', '.join(missing)}; pass pruning.assets.load_asset_scripts() "
            "(after `headscope assets install`)."
        )
    heading = f'<p class="hs-title">{html.escape(title)}</p>' if title else ""
    note = f'<p class="hs-removed">{html.escape(caption)}</p>' if caption else ""
    # d3 and jQuery before require.js: as globals they never meet its anonymous-define check.
    libraries = "\n".join(_inline_script(scripts[name]) for name in ("d3", "jquery", "requirejs"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title or 'Attention')}</title><style>{_STYLE}</style></head>\n"
        f"<body>{heading}{note}\n{libraries}\n{_inline_script(_AMD_BRIDGE)}\n{body}\n"
        f"{_inline_script(mark_script)}\n</body></html>\n"
    )


def _torch_layers(values: np.ndarray) -> list[Any]:
    """bertviz's input: one ``(1, H, T, T)`` tensor per layer."""
    import torch

    return [torch.from_numpy(layer[None].copy()) for layer in values]


def build_head_view_html(
    tokens: Sequence[str],
    attentions: Any,
    present: Any,
    scripts: Mapping[str, str],
    *,
    title: str | None = None,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
) -> str:
    """A self-contained, offline bertviz head view of one sentence.

    Args:
        tokens: the ``T`` tokens (special tokens included).
        attentions: ``(n_layers, n_heads, T, T)`` attention probabilities, numpy or torch; values
            of removed heads are ignored (NaN in :func:`pruning.capture.capture_sentences`).
        present: bool ``(n_layers, n_heads)``, True where the head exists (True = keep).
        scripts: ``{"d3", "jquery", "requirejs"}`` script text
            (:func:`pruning.assets.load_asset_scripts`).
        title: an optional heading.
        layer: the layer shown first; default the first layer that still has heads.
        heads: the heads selected first; default all.

    Returns:
        A full HTML document; removed heads draw no lines, are crossed out in the head boxes of
        the layer shown and listed in a caption.

    Raises:
        ValueError: shapes that do not match, a layer or head out of range, or missing scripts.
    """
    from bertviz import head_view

    words, values, grid = _padded_inputs(tokens, attentions, present)
    n_layers, n_heads = grid.shape
    if layer is None:
        layer = next((i for i in range(n_layers) if grid[i].any()), 0)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be between 0 and {n_layers - 1}; got {layer}.")
    chosen = None if heads is None else [int(h) for h in heads]
    if chosen is not None and (not chosen or not all(0 <= h < n_heads for h in chosen)):
        raise ValueError(f"heads must be a non-empty list of head indices 0..{n_heads - 1}.")
    view = head_view(_torch_layers(values), words, layer=layer, heads=chosen, html_action="return")
    body, root_id = _offline_body(view.data)
    if body.count(_HEAD_VIEW_OPACITY) != 1:
        raise RuntimeError(
            "bertviz's head view script changed; HeadScope supports bertviz 1.4.1: "
            "pip install 'bertviz==1.4.1'."
        )
    present_json = _script_json(grid.tolist())
    body = body.replace(
        _HEAD_VIEW_OPACITY, _HEAD_VIEW_OPACITY_PRESENT.replace("HS_PRESENT", present_json)
    )
    removed = [[int(h) for h in np.flatnonzero(~row)] for row in grid]
    mark = (
        _MARK_HEAD_VIEW.replace("ROOT_ID", _script_json(root_id))
        .replace("REMOVED", _script_json(removed))
        .replace("N_HEADS", str(n_heads))
        .replace("BOX", str(_CHECKBOX_SIZE))
    )
    return _document(body, mark, scripts, title, removed_heads_caption(grid))


def build_model_view_html(
    tokens: Sequence[str],
    attentions: Any,
    present: Any,
    scripts: Mapping[str, str],
    *,
    title: str | None = None,
) -> str:
    """A self-contained, offline bertviz model view (every layer x head thumbnail).

    Args:
        tokens, attentions, present, scripts, title: as in :func:`build_head_view_html`.

    Returns:
        A full HTML document; removed heads' thumbnails are empty, greyed and crossed out
        (``g.hs-removed-head`` elements), and listed in a caption.

    Raises:
        ValueError: shapes that do not match or missing scripts.
    """
    from bertviz import model_view

    words, values, grid = _padded_inputs(tokens, attentions, present)
    view = model_view(_torch_layers(values), words, display_mode="light", html_action="return")
    body, root_id = _offline_body(view.data)
    removed = [[int(layer), int(head)] for layer, head in np.argwhere(~grid)]
    mark = _MARK_MODEL_VIEW.replace("ROOT_ID", _script_json(root_id)).replace(
        "REMOVED", _script_json(removed)
    )
    return _document(body, mark, scripts, title, removed_heads_caption(grid))
