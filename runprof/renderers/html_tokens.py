"""The per-token view of the HTML report, and the repeat rates of that sequence against random routing.

Each token is a ``<span class="tk" data-i="i" data-x="e">`` whose ``data-x`` is its first-choice expert (the
highest weight) in the selected layer, ``"n"`` when it was not routed; a CSS rule per expert id colours it.
The expert ids and weights of every layer travel as JSON in ``<script id="tv-data">``; the script shows them
for the hovered or focused token. Keys: Tab reaches the tokens, ← → move between them, ↑ ↓ switch layers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..results import TrackResult
from ..results.tokens import TokenView
from .html_parts import esc, note, section, table

HOW_TO_GET = ("This result has no per-token view: it is kept by runs written with --html "
              "(python -m runprof --prompt FILE --html report.html), or build one with "
              "runprof.results.tokens.token_view(t.trace, output_ids, tokenizer) and "
              "dataclasses.replace(t.result, tokens=view).")
WEIGHT_DIGITS = 3  # weights shown in the page (the result keeps 6 decimals)


@dataclass(frozen=True)
class Repeats:
    """Consecutive-token repeat rates of one layer over the view's sequence (fractions) and their random
    baselines; attribute names as :class:`~runprof.routing.stats.LayerRouting` has them."""

    name: str
    top_k: int
    pairs: int
    first_choice_repeat: float | None
    first_choice_random: float
    any_overlap_repeat: float | None
    any_overlap_random: float
    jaccard_repeat: float | None
    jaccard_random: float


def repeat_rates(view: TokenView) -> list[Repeats]:
    """Per layer: over consecutive routed tokens of the sequence, how often the first choice repeats, the
    top-k sets overlap, and their mean Jaccard index; random routing's values beside them."""
    from ..routing.baselines import random_any_overlap, random_first_choice, random_jaccard

    out = []
    for name, layer in zip(view.layer_names, view.experts):
        k = max((len(e) for e in layer if e), default=1)
        e = max(view.num_experts, k)
        pairs = [(a, b) for a, b in zip(layer, layer[1:]) if a and b]
        first = sum(a[0] == b[0] for a, b in pairs)
        overlap = sum(bool(set(a) & set(b)) for a, b in pairs)
        jaccard = sum(len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in pairs)
        m = len(pairs)
        out.append(Repeats(name, k, m, first / m if m else None, random_first_choice(e),
                           overlap / m if m else None, random_any_overlap(e, k),
                           jaccard / m if m else None, random_jaccard(e, k)))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def repeat_section(r: TrackResult) -> str:
    """Repeat rates of the per-token view's sequence per layer (table and figure)."""
    from .html_figures import figure_or_note
    from .plots import repeat_bars, short_name

    title = "Consecutive-token expert repeats vs random routing"
    if r.tokens is None:
        return section("repeats", title, note("Repeat rates need the per-token view. " + HOW_TO_GET))
    rates = repeat_rates(r.tokens)
    k = max((x.top_k for x in rates), default=1)
    if k == 1:
        rows = [[x.name, x.pairs, f"{_pct(x.first_choice_repeat)} ({_pct(x.first_choice_random)})"] for x in rates]
        headers = ["layer", "pairs", "repeat (random); at k = 1 first choice = any overlap = Jaccard"]
    else:
        rows = [[x.name, x.pairs, f"{_pct(x.first_choice_repeat)} ({_pct(x.first_choice_random)})",
                 f"{_pct(x.any_overlap_repeat)} ({_pct(x.any_overlap_random)})",
                 f"{_pct(x.jaccard_repeat)} ({_pct(x.jaccard_random)})"] for x in rates]
        headers = ["layer", "pairs", "first choice (random)", "any overlap (random)", "Jaccard (random)"]
    caption = (f"row {r.tokens.row}'s sequence: {len(r.tokens.tokens)} tokens, consecutive pairs of routed tokens; "
               "random: 1/E, 1 - C(E-k,k)/C(E,k), hypergeometric Jaccard")
    fig = figure_or_note(lambda: repeat_bars([(f"top-k = {k}", k, rates)],
                                             f"{short_name(r.model.name)}: repeats vs random routing"),
                         "repeat rates per layer: bars measured, dashed lines random routing")
    return section("repeats", title, table(headers, rows, caption=caption), fig)


def _marked(text: str) -> str:
    """Escaped ``text`` with an empty ``<i class="nl">`` before each newline: CSS draws a ↵ there, and the
    span's text stays exactly the token's."""
    return '<i class="nl"></i>\n'.join(esc(part) for part in text.split("\n"))


def _token_spans(view: TokenView) -> str:
    first = view.first_choice(0) if view.experts else ()
    out = []
    for i, text in enumerate(view.tokens):
        classes = ["tk"] + (["gen"] if i >= view.first_generated else []) + (["empty"] if text == "" else [])
        x = "n" if not first or first[i] is None else str(first[i])
        if i == view.first_generated:
            out.append('<span class="boundary" aria-hidden="true">generated \u25b8</span>')
        out.append(f'<span class="{" ".join(classes)}" data-i="{i}" data-x="{x}" '
                   f'tabindex="{0 if i == 0 else -1}">{_marked(text)}</span>')
    return "".join(out)


def _data(view: TokenView) -> str:
    weights = [None if layer is None else [None if w is None else [round(x, WEIGHT_DIGITS) for x in w] for w in layer]
               for layer in view.weights]
    payload = {"layers": list(view.layer_names), "num_experts": view.num_experts,
               "first_generated": view.first_generated, "token_ids": list(view.token_ids),
               "experts": [[None if e is None else list(e) for e in layer] for layer in view.experts],
               "weights": weights}
    # "<" escaped: the JSON can never close its <script> element, whatever the tokens say
    return json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")


def _legend(view: TokenView) -> str:
    items = "".join(f'<span class="sw" data-x="{e}" title="expert {e}">{e}</span>'
                    f'<span class="sw count" data-e="{e}" title="tokens with first choice {e}"></span>'
                    for e in range(view.num_experts))
    return (f'<div class="legend" aria-label="expert colours">first-choice expert (and how many tokens of the '
            f'sequence chose it in this layer): {items}<span class="sw" data-x="n">&nbsp;&nbsp;</span> not routed '
            f'(the last generated token is never fed back) &middot; <span class="sample">underlined</span>: '
            f'generated</div>')


def token_section(r: TrackResult) -> tuple[str, str, str]:
    """(section HTML, CSS of the expert colours, script) of the per-token view; the note on how to get it
    when the result has no view."""
    from .html_assets import JS, expert_css

    title = "Per-token experts"
    view = r.tokens
    if view is None:
        return section("per-token", title, note(HOW_TO_GET)), "", ""
    options = "".join(f'<option value="{j}"{" selected" if j == 0 else ""}>{j}: {esc(name)}</option>'
                      for j, name in enumerate(view.layer_names))
    routed = sum(1 for i in range(len(view.tokens)) if view.routed(i))
    controls = (f'<div class="controls"><label for="layer">MoE layer</label><select id="layer">{options}</select>'
                '<button type="button" id="prev-layer" aria-label="previous layer">\u25b2 previous</button>'
                '<button type="button" id="next-layer" aria-label="next layer">\u25bc next</button>'
                '<span class="note">hover a token, or Tab to the text and use \u2190 \u2192; \u2191 \u2193 switch '
                'layers</span></div>')
    intro = note(f"Row {view.row} of the run: {view.first_generated} prompt and {len(view.tokens) - view.first_generated}"
                 f" generated tokens ({routed} routed), each coloured by its first-choice (highest-weight) expert in "
                 f"the selected layer; whitespace and newlines (\u21b5) as the tokenizer decodes them.")
    body = (f'<div class="tv"><div><pre class="tokens" id="tokens" aria-label="tokens">{_token_spans(view)}</pre></div>'
            f'<aside id="detail" aria-live="polite"><p class="note">Hover or focus a token to see its experts and '
            f'weights in every layer.</p></aside></div>')
    script = f'<script type="application/json" id="tv-data">{_data(view)}</script><script>{JS}</script>'
    return section("per-token", title, intro, controls, _legend(view), body), expert_css(view.num_experts), script


__all__ = ["HOW_TO_GET", "Repeats", "repeat_rates", "repeat_section", "token_section"]
