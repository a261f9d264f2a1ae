"""The per-token view of one generated sequence: its tokens as text, and the experts each used in each layer.

:func:`token_view` builds it after a tracked ``generate`` from the routing trace, the returned token ids and
the tokenizer; the HTML report (``runprof.render(result, format="html")``) colours each token by its first
choice (the highest-weight expert) in a selected layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from ..tracking.trace import LayerTrace, RoutingTrace

WEIGHT_DECIMALS = 6  # router weights are kept to 1e-6 (bf16 and fp32 routers alike): smaller JSON, exact order
_UTF8_WAIT = 4  # a character spans at most 4 byte-level tokens: wait at most that long for it to complete
_CONTEXT = 8  # tokens decoded before a piece, so tokenizers that drop a leading space at the start see context

Experts = tuple[tuple[int, ...] | None, ...]  # per token: expert ids, highest weight first; None = not routed
Weights = tuple[tuple[float, ...] | None, ...]  # per token: the weights of those experts, same order


@dataclass(frozen=True)
class TokenView:
    """One sequence (batch ``row``) of a tracked generation: ``tokens`` (decoded text pieces, prompt then
    generated, whitespace and newlines kept; ``"".join(tokens)`` is the decoded sequence), their
    ``token_ids``, the index of the first generated token, and per MoE layer and token the expert ids
    (highest weight first) and their weights. A token that was not routed has ``None``: in ``generate`` the
    last generated token is never fed back to the model. ``weights[layer]`` is None where the layer's router
    passed no weights (its ids keep the router's order)."""

    layer_names: tuple[str, ...]
    num_experts: int
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    first_generated: int
    experts: tuple[Experts, ...]  # [layer][token]
    weights: tuple[Weights | None, ...]  # [layer][token]
    row: int = 0

    def first_choice(self, layer: int) -> tuple[int | None, ...]:
        """Each token's first-choice expert in MoE layer ``layer`` (None where the token was not routed)."""
        return tuple(None if e is None or not e else e[0] for e in self.experts[layer])

    def routed(self, token: int) -> bool:
        """Whether token ``token`` went through the MoE layers (every generated token but the last does)."""
        return any(layer[token] is not None for layer in self.experts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row, "layer_names": list(self.layer_names), "num_experts": self.num_experts,
            "tokens": list(self.tokens), "token_ids": list(self.token_ids), "first_generated": self.first_generated,
            "experts": [[None if e is None else list(e) for e in layer] for layer in self.experts],
            "weights": [None if layer is None else [None if w is None else list(w) for w in layer]
                        for layer in self.weights],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenView:
        return cls(
            layer_names=tuple(d["layer_names"]), num_experts=d["num_experts"], tokens=tuple(d["tokens"]),
            token_ids=tuple(d["token_ids"]), first_generated=d["first_generated"],
            experts=tuple(tuple(None if e is None else tuple(e) for e in layer) for layer in d["experts"]),
            weights=tuple(None if layer is None else tuple(None if w is None else tuple(w) for w in layer)
                          for layer in d["weights"]),
            row=d.get("row", 0),
        )


def token_pieces(ids: Sequence[int], tokenizer: Any) -> tuple[str, ...]:
    """The text of each token of ``ids``, so that the pieces joined are the decoded text (special tokens and
    spaces kept). A character split over several byte-level tokens goes to the last of them (the others get
    ``""``); each piece is decoded with a few tokens of context, so tokenizers that drop a word's leading
    space at the start of a text keep it inside one.

    >>> from runprof.models.loading import load_model
    >>> tok = load_model().tokenizer  # doctest: +SKIP
    >>> token_pieces(tok("def f(x):\\n")["input_ids"], tok)  # doctest: +SKIP
    ('<s>', 'def', ' f', '(', 'x', '):', '\\n')
    """
    ids = [int(i) for i in ids]

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces: list[str] = []
    start = 0  # the first token whose text is not out yet
    for i in range(len(ids)):
        ctx = max(0, start - _CONTEXT)
        before, now = decode(ids[ctx:start]), decode(ids[ctx:i + 1])
        if now.endswith("\ufffd") and i + 1 < len(ids) and i + 1 - start < _UTF8_WAIT:
            pieces.append("")  # an incomplete UTF-8 character: its text comes with a later token
            continue
        pieces.append(now[len(before):] if now.startswith(before) else decode(ids[start:i + 1]))
        start = i + 1
    return tuple(pieces)


def _row_ids(token_ids: Any, row: int) -> list[int]:
    data = token_ids.tolist() if hasattr(token_ids, "tolist") else list(token_ids)
    if data and isinstance(data[0], (list, tuple)):
        if not 0 <= row < len(data):
            raise InvalidArgumentError.bad("row", row, f"token_ids has {len(data)} rows (0..{len(data) - 1})")
        data = list(data[row])
    return [int(x) for x in data]


def _generation(trace: RoutingTrace) -> tuple[int, list[int]]:
    """The first prefill step of the trace and the decode steps that follow it (one ``generate`` call)."""
    first = next((i for i, s in enumerate(trace.steps) if s.phase == "prefill"), None)
    if first is None:
        raise InvalidArgumentError("token_view: the trace has no prefill step; track a model.generate(...) call")
    decode = []
    for i in range(first + 1, len(trace.steps)):
        if trace.steps[i].phase != "decode":
            break
        decode.append(i)
    if any(trace.steps[i].seq < 1 or trace.steps[i].batch < 1 for i in [first, *decode]):
        raise InvalidArgumentError("token_view: the trace's steps have no batch x seq shape (not a generate call)")
    return first, decode


def _offsets(trace: RoutingTrace, first: int, decode: list[int]) -> tuple[list[int], list[int]]:
    """Per step, the index in the output sequence of the step's position 0 (-1 outside the generation), and
    each step's seq."""
    offset = [-1] * len(trace.steps)
    offset[first] = 0
    cursor = trace.steps[first].seq
    for i in decode:
        offset[i] = cursor
        cursor += trace.steps[i].seq
    return offset, [s.seq for s in trace.steps]


def _layer_rows(layer: LayerTrace, offset: list[int], seqs: list[int], row: int,
                decimals: int) -> dict[int, tuple[tuple[int, ...], tuple[float, ...] | None]]:
    """Output index -> (expert ids by weight, weights) for the rows of batch row ``row`` in this layer."""
    import torch

    if layer.step.numel() == 0:
        return {}
    off = torch.tensor(offset, dtype=torch.long)[layer.step]
    seq = torch.tensor(seqs, dtype=torch.long)[layer.step].clamp(min=1)
    keep = (off >= 0) & (layer.position // seq == row) & layer.real
    index = (off + layer.position % seq)[keep].tolist()
    ids = layer.ids[keep].tolist()
    weights = layer.weights[keep].double().tolist() if layer.weights is not None else None
    out = {}
    for j, where in enumerate(index):
        pairs = [(e, None if weights is None else weights[j][c]) for c, e in enumerate(ids[j]) if e >= 0]
        if weights is not None:
            pairs.sort(key=lambda p: -p[1])  # stable: ties keep the router's order, as argmax does
        out[where] = (tuple(e for e, _ in pairs),
                      None if weights is None else tuple(round(w, decimals) for _, w in pairs))
    return out


def token_view(trace: RoutingTrace, token_ids: Any, tokenizer: Any, row: int = 0, *,
               eos_token_ids: Iterable[int] | None = None) -> TokenView:
    """The per-token view of batch row ``row`` of the one ``generate`` call in ``trace``.

    ``token_ids`` is what ``generate`` returned (``[B, L]``, or row ``row`` of it as ``[L]``). Pads of a
    left-padded prompt (the prefill step's attention mask) are not tokens, and nor is what follows the first
    generated end-of-sequence token (``eos_token_ids``, default the tokenizer's) in a row that finished early.

    >>> import torch, runprof
    >>> from runprof.models.loading import load_model
    >>> loaded = load_model()
    >>> enc = loaded.tokenizer("def f(x):", return_tensors="pt")
    >>> with torch.inference_mode(), runprof.track(loaded.model, trace=True, weights=True) as t:
    ...     out = loaded.model.generate(**enc, max_new_tokens=4, do_sample=False)
    >>> view = token_view(t.trace, out, loaded.tokenizer)
    >>> len(view.tokens) == out.shape[1], view.first_generated == enc["input_ids"].shape[1], view.routed(-1)
    (True, True, False)
    """
    ids = _row_ids(token_ids, row)
    first, decode = _generation(trace)
    pre = trace.steps[first]
    if not 0 <= row < pre.batch:
        raise InvalidArgumentError.bad("row", row, f"the generation has {pre.batch} rows (0..{pre.batch - 1})")
    fed = pre.seq + sum(trace.steps[i].seq for i in decode)
    if len(ids) < pre.seq or len(ids) > fed + 1:
        raise InvalidArgumentError.bad("token_ids", f"{len(ids)} tokens", f"the traced generate call fed {fed} "
                                       f"tokens per row ({pre.seq} prompt): pass what that call returned")
    mask = pre.mask.reshape(pre.batch, pre.seq)[row].tolist() if pre.mask is not None else [True] * pre.seq
    eos = set(eos_token_ids if eos_token_ids is not None else _eos(tokenizer))
    end = next((i + 1 for i in range(pre.seq, len(ids)) if ids[i] in eos), len(ids))
    keep = [i for i in range(pre.seq) if mask[i]] + list(range(pre.seq, end))
    offset, seqs = _offsets(trace, first, decode)
    experts, weights = [], []
    for layer in trace.layers:
        rows = _layer_rows(layer, offset, seqs, row, WEIGHT_DECIMALS)
        experts.append(tuple(rows[i][0] if i in rows else None for i in keep))
        weights.append(None if layer.weights is None else tuple(rows[i][1] if i in rows else None for i in keep))
    kept = [ids[i] for i in keep]
    return TokenView(
        layer_names=tuple(trace.layer_names), num_experts=max((layer.num_experts for layer in trace.layers), default=0),
        tokens=token_pieces(kept, tokenizer), token_ids=tuple(kept),
        first_generated=sum(1 for i in keep if i < pre.seq), experts=tuple(experts), weights=tuple(weights), row=row,
    )


def _eos(tokenizer: Any) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


__all__ = ["TokenView", "WEIGHT_DECIMALS", "token_pieces", "token_view"]
