"""The CSS and JavaScript of the HTML report (plain CSS and vanilla JS, inline: the page needs no network)."""
from __future__ import annotations

import colorsys

CSS = """
:root { color-scheme: light; --fg: #1b1b1b; --muted: #5f6368; --line: #d9d9d9; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header, main, footer { max-width: 1240px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 12px; }
h1 { font-size: 21px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav { margin: 6px 0 0; } nav a { margin-right: 14px; }
a { color: #0b57d0; }
a:focus-visible, button:focus-visible, select:focus-visible { outline: 2px solid #0b57d0; outline-offset: 2px; }
.facts { color: var(--muted); margin: 2px 0; }
.note { color: var(--muted); }
.warn { color: #b3261e; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 9px; border-bottom: 1px solid #ececec; text-align: right; vertical-align: top; }
th { border-bottom: 1px solid #bdbdbd; font-weight: 600; background: #fafafa; }
th:first-child, td:first-child, td.l, th.l { text-align: left; }
td.l { max-width: 640px; }
.scroll { overflow-x: auto; }
figure { margin: 8px 0 14px; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 6px 0; }
.controls select, .controls button { font: inherit; padding: 2px 8px; }
.legend { margin: 6px 0; line-height: 1.9; }
.sw { display: inline-block; min-width: 2.1em; padding: 0 3px; margin: 1px; border-radius: 3px; text-align: center;
  font: 11px/1.5 ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.sw.count { min-width: 0; color: var(--muted); background: none; }
.tv { display: grid; grid-template-columns: minmax(0, 1fr) 340px; gap: 16px; align-items: start; }
@media (max-width: 900px) { .tv { grid-template-columns: minmax(0, 1fr); } }
.tokens { margin: 0; padding: 10px; border: 1px solid var(--line); border-radius: 4px; white-space: pre-wrap;
  word-break: break-all; font: 13px/1.95 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.tk { border-radius: 2px; padding: 1px 0; }
.tk:focus, .tk.on { outline: 2px solid #000; outline-offset: 0; position: relative; z-index: 1; }
.tk .nl { font-style: normal; } .tk .nl::before { content: "\\21B5"; opacity: 0.55; }
.tk.empty::before { content: "\\00B7"; opacity: 0.55; }
.tk.gen, .sample { text-decoration: underline; text-decoration-thickness: 2px; text-underline-offset: 3px; }
.boundary { font: 11px system-ui, sans-serif; color: var(--muted); border: 1px solid var(--line); border-radius: 3px;
  padding: 0 4px; margin: 0 3px; white-space: nowrap; }
#detail { position: sticky; top: 8px; border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px;
  font-size: 13px; min-height: 120px; }
#detail table { margin: 4px 0; } #detail td, #detail th { padding: 1px 6px; }
#detail tr.cur td { font-weight: 700; background: #f1f3f4; }
#detail .txt { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; background: #f1f3f4;
  padding: 0 4px; white-space: pre; }
[data-x="n"] { background: repeating-linear-gradient(45deg, #fff, #fff 3px, #c8c8c8 3px, #c8c8c8 6px);
  color: #000; box-shadow: inset 0 0 0 1px #888; }
"""

JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tv-data").textContent);
  var box = document.getElementById("tokens");
  var toks = Array.prototype.slice.call(box.querySelectorAll(".tk"));
  var sel = document.getElementById("layer");
  var detail = document.getElementById("detail");
  var counts = document.querySelectorAll(".legend .count");
  var current = -1;
  function first(l, i) { var e = data.experts[l][i]; return e && e.length ? e[0] : null; }
  function paint() {
    var l = Number(sel.value), n = new Array(data.num_experts).fill(0);
    toks.forEach(function (t, i) {
      var f = first(l, i);
      t.setAttribute("data-x", f === null ? "n" : String(f));
      if (f !== null) { n[f] += 1; }
    });
    counts.forEach(function (c) { c.textContent = String(n[Number(c.getAttribute("data-e"))]); });
    if (current >= 0) { show(current); }
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) { td.className = cls; } tr.appendChild(td);
    return td;
  }
  function show(i) {
    current = i;
    var t = toks[i], l = Number(sel.value);
    toks.forEach(function (x) { x.classList.remove("on"); }); t.classList.add("on");
    detail.textContent = "";
    var h = document.createElement("div"), s = document.createElement("span");
    h.appendChild(document.createTextNode("token " + i + " (" + (i >= data.first_generated ? "generated" : "prompt")
      + ", id " + data.token_ids[i] + "): "));
    s.className = "txt"; s.textContent = JSON.stringify(t.textContent).slice(1, -1); h.appendChild(s);
    detail.appendChild(h);
    if (data.experts.every(function (layer) { return layer[i] === null; })) {
      var p = document.createElement("p"); p.className = "note";
      p.textContent = "not routed: generate() never feeds the last generated token back to the model";
      detail.appendChild(p); return;
    }
    var table = document.createElement("table"), head = document.createElement("tr");
    ["layer", "experts (weight), first choice first"].forEach(function (x) {
      var th = document.createElement("th"); th.textContent = x; th.className = "l"; head.appendChild(th); });
    table.appendChild(head);
    data.layers.forEach(function (name, j) {
      var tr = document.createElement("tr"), ex = data.experts[j][i], w = data.weights[j] && data.weights[j][i];
      if (j === l) { tr.className = "cur"; }
      cell(tr, name, "l");
      var td = cell(tr, ex === null ? "not routed" : "", "l");
      (ex || []).forEach(function (e, c) {
        var sw = document.createElement("span"); sw.className = "sw"; sw.setAttribute("data-x", String(e));
        sw.textContent = String(e); td.appendChild(sw);
        td.appendChild(document.createTextNode(w ? " " + w[c].toFixed(3) + "  " : "  "));
      });
      table.appendChild(tr);
    });
    detail.appendChild(table);
  }
  function focusToken(i) {
    if (i < 0 || i >= toks.length) { return; }
    toks.forEach(function (x) { x.tabIndex = -1; }); toks[i].tabIndex = 0; toks[i].focus();
  }
  function step(d) {
    var n = sel.options.length; sel.selectedIndex = (sel.selectedIndex + d + n) % n; paint();
  }
  box.addEventListener("mouseover", function (e) {
    var t = e.target.closest ? e.target.closest(".tk") : null; if (t) { show(Number(t.dataset.i)); } });
  box.addEventListener("focusin", function (e) { if (e.target.classList.contains("tk")) { show(Number(e.target.dataset.i)); } });
  box.addEventListener("keydown", function (e) {
    var i = Number(e.target.dataset.i), keys = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: toks.length - 1 };
    if (e.key in keys) { focusToken(keys[e.key]); e.preventDefault(); }
    else if (e.key === "ArrowDown" || e.key === "ArrowUp") { step(e.key === "ArrowDown" ? 1 : -1); e.preventDefault(); }
  });
  sel.addEventListener("change", paint);
  document.getElementById("prev-layer").addEventListener("click", function () { step(-1); });
  document.getElementById("next-layer").addEventListener("click", function () { step(1); });
  paint();
}());
"""

_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
          "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
          "#17becf", "#9edae5")


def palette(num_experts: int) -> list[str]:
    """One colour per expert: matplotlib's tab10 / tab20 up to 20 experts, then hues a golden angle apart at
    three lightnesses (neighbouring ids differ in hue and lightness).

    >>> palette(2), len(palette(256)), len(set(palette(256)))
    (['#1f77b4', '#ff7f0e'], 256, 256)
    """
    if num_experts <= 10:
        return list(_TAB10[:num_experts])
    if num_experts <= 20:
        return list(_TAB20[:num_experts])
    out = []
    for i in range(num_experts):
        r, g, b = colorsys.hls_to_rgb((i * 0.381966) % 1.0, (0.42, 0.58, 0.74)[i % 3], 0.62 + 0.2 * ((i // 3) % 2))
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def text_colour(hex_colour: str) -> str:
    """Black or white, whichever reads better on ``hex_colour`` (WCAG relative luminance).

    >>> text_colour("#1f77b4"), text_colour("#ffbb78")
    ('#fff', '#000')
    """
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(int(hex_colour[i:i + 2], 16) / 255) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "#fff"


def expert_css(num_experts: int) -> str:
    """One rule per expert id: ``[data-x="3"]`` gets expert 3's colour (tokens and legend swatches alike)."""
    return "\n".join(f'[data-x="{i}"] {{ background: {c}; color: {text_colour(c)}; }}'
                     for i, c in enumerate(palette(num_experts)))


__all__ = ["CSS", "JS", "expert_css", "palette", "text_colour"]
