"""Scoring the prompt under a top-k: mean log-likelihood and the router's full distribution per layer.

One forward of the prompt with ``output_router_logits=True``. The log-likelihood is computed from the
logits (mean over positions 1..L−1 of log p(x_t | x_<t), the negative of transformers' causal-LM loss
with ``labels=input_ids``) rather than from ``loss``, because with router logits requested transformers
adds the auxiliary load-balancing loss to ``loss``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..moe.discovery import find_moe_layers
from .router import RouterDistribution, router_distribution


@dataclass(frozen=True)
class PromptScore:
    """The prompt's mean log-likelihood (nats per predicted token) at ``top_k``, and per MoE layer the
    router's distribution on the prompt (``router`` is None with ``router_note`` when the model does not
    return router logits)."""

    top_k: int | None
    predicted_tokens: int
    mean_logprob: float
    router: tuple[RouterDistribution | None, ...] | None
    router_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k, "predicted_tokens": self.predicted_tokens, "mean_logprob": self.mean_logprob,
            "router": None if self.router is None else [None if r is None else r.to_dict() for r in self.router],
            "router_note": self.router_note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptScore:
        router = None if d["router"] is None else tuple(
            None if r is None else RouterDistribution.from_dict(r) for r in d["router"])
        return cls(d["top_k"], d["predicted_tokens"], d["mean_logprob"], router, d.get("router_note"))


def mean_logprob(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int]:
    """Mean log p(x_t | x_<t) over t = 1..L−1 of every row, and the number of predicted tokens.

    >>> mean_logprob(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]))  # uniform over 4: log(1/4)
    (-1.3862943611198906, 2)
    """
    lp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    picked = lp.gather(-1, input_ids[:, 1:, None].to(lp.device)).squeeze(-1)
    return float(picked.mean()), int(picked.numel())


def score_prompt(model: nn.Module, input_ids: torch.Tensor, *, top_k: int | None) -> PromptScore:
    """Score ``input_ids`` ([1, L]) with the model as it is now (``top_k`` is recorded, not set).

    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_config(MixtralConfig(hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)).eval()
    >>> s = score_prompt(model, torch.arange(3, 11)[None], top_k=2)
    >>> s.predicted_tokens, len(s.router), s.router[0].tokens
    (7, 2, 8)
    """
    with torch.inference_mode():
        try:
            out = model(input_ids=input_ids, output_router_logits=True, use_cache=False)
        except TypeError:  # a model whose forward takes no output_router_logits
            out = model(input_ids=input_ids, use_cache=False)
    value, n = mean_logprob(out.logits, input_ids)
    router, note = _router(model, out, top_k, int(input_ids.numel()))
    return PromptScore(top_k, n, value, router, note)


def _router(model: nn.Module, out: Any, top_k: int | None,
            tokens: int) -> tuple[tuple[RouterDistribution | None, ...] | None, str | None]:
    logits = getattr(out, "router_logits", None)
    layers = find_moe_layers(model)
    if top_k is None:
        return None, "the router's k is unknown"
    if not isinstance(logits, (tuple, list)) or len(logits) != len(layers):
        return None, "the model returned no router logits (one [tokens, experts] tensor per MoE layer)"
    dists: list[RouterDistribution | None] = []
    for layer, x in zip(layers, logits):
        e = layer.num_experts
        ok = isinstance(x, torch.Tensor) and x.shape[-1] == e and x.numel() == tokens * e
        dists.append(router_distribution(x, min(top_k, e)) if ok else None)
    note = None if all(d is not None for d in dists) else "some router logits were not [tokens, experts]"
    return tuple(dists), note


__all__ = ["PromptScore", "mean_logprob", "score_prompt"]
