"""Statistics of the router's full probability distribution, from router logits ``[T, E]``.

The routing trace holds only the k chosen experts and their (often renormalized) weights; the exact
load-balancing loss and the entropy of the whole router distribution need the logits, which a model
returns itself with ``output_router_logits=True`` (bench asks for them on the prompt forward).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass(frozen=True)
class RouterDistribution:
    """One layer's router distribution over ``tokens`` real tokens.

    ``load_balancing_loss`` is transformers' ``load_balancing_loss_func`` for this layer alone:
    E · Σ_e f_e · P_e, f_e = fraction of tokens whose top-k (of the softmax) holds e, P_e = mean softmax
    probability of e (k at perfect balance, E when collapsed). ``entropy_normalized`` is the mean over
    tokens of H(softmax)/ln E; ``top1_prob_mean`` the mean largest probability.
    """

    tokens: int
    top_k: int
    load_balancing_loss: float
    top1_prob_mean: float
    entropy_normalized: float | None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouterDistribution:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def router_distribution(logits: torch.Tensor, top_k: int, mask: torch.Tensor | None = None) -> RouterDistribution:
    """Statistics of ``softmax(logits)`` for the rows where ``mask`` (bool ``[T]``) is True.

    >>> d = router_distribution(torch.zeros(4, 8), top_k=2)  # every token: uniform 1/8
    >>> d.top1_prob_mean, d.entropy_normalized
    (0.125, 1.0)
    >>> router_distribution(torch.tensor([[9.0, 0, 0, 0]] * 3), top_k=1).load_balancing_loss > 3.99  # E=4
    True
    """
    x = logits.detach().reshape(-1, logits.shape[-1]).float().cpu()
    if mask is not None:
        x = x[mask.reshape(-1).cpu().bool()]
    e = x.shape[-1]
    probs = torch.softmax(x, dim=-1).double()
    chosen = torch.topk(probs, top_k, dim=-1).indices
    f = torch.zeros(e, dtype=torch.float64).index_add_(0, chosen.reshape(-1), torch.ones(chosen.numel(),
                                                                                           dtype=torch.float64))
    n = max(x.shape[0], 1)
    lbl = e * float((f / n * probs.sum(0) / n).sum())
    h = -(probs * probs.clamp(min=1e-300).log()).sum(1)
    return RouterDistribution(
        tokens=int(x.shape[0]),
        top_k=top_k,
        load_balancing_loss=lbl,
        top1_prob_mean=float(probs.max(1).values.mean()) if x.shape[0] else 0.0,
        entropy_normalized=float(h.mean()) / math.log(e) if e > 1 and x.shape[0] else None,
    )


__all__ = ["RouterDistribution", "router_distribution"]
