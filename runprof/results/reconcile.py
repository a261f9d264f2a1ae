"""Static vs measured, one row per quantity, with the cause of each difference as a :class:`Cause`.

Quantities: ``active_params_per_token`` (convention ``all``), ``experts_per_token`` (per MoE layer, against
the router's k), ``active_params_per_token_at_config_k`` (only when the config's k differs from the
routers'), ``params_touched`` (the union of the run against the total).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .causes import Cause, cause_from_json, cause_to_json
from .count import CountResult, active_per_token

if TYPE_CHECKING:
    from .run import RuntimeInfo


@dataclass(frozen=True)
class ReconcileRow:
    """Static vs measured value of one quantity (an identifier such as ``active_params_per_token``), with
    the cause of any difference as a code and the numbers behind it."""

    quantity: str
    static: float | int | None
    measured: float | int | None
    delta: float | int | None
    cause: Cause
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "static": self.static, "measured": self.measured, "delta": self.delta,
                **cause_to_json(self.cause, self.detail)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReconcileRow:
        cause, detail = cause_from_json(d)
        return cls(d["quantity"], d["static"], d["measured"], d["delta"], cause, detail)


def reconcile(static: CountResult, rt: RuntimeInfo) -> tuple[ReconcileRow, ...]:
    """The reconcile rows of a run (see the module docstring)."""
    s_all = static.params.active_per_token["all"]
    m = rt.active_params_per_token["all"]
    if m.mean is None:
        o = rt.observation
        cause, detail = Cause.NO_TOKENS, {}
        if o.missed_layer_steps:
            cause, detail = Cause.ROUTING_NOT_OBSERVED, {"layer_steps": o.missed_layer_steps, "steps": o.steps}
        elif o.misaligned_layer_steps:
            cause, detail = Cause.ROWS_MISALIGNED, {"layer_steps": o.misaligned_layer_steps}
        elif any(c is Cause.LAYER_SUBSET for c, _ in o.notes):
            cause, detail = Cause.LAYER_SUBSET, next(d for c, d in o.notes if c is Cause.LAYER_SUBSET)
        elif sum(rt.tokens.values()):
            cause = Cause.NOT_MEASURED
        return (ReconcileRow("active_params_per_token", s_all, None, None, cause, detail),)
    rows = [ReconcileRow("active_params_per_token", s_all, m.mean, m.mean - s_all, _active_cause(static, rt))]
    if static.moe is None:
        return tuple(rows)
    k_cfg, k_router = rt.top_k["config"], rt.top_k["router"]
    e = rt.experts_per_token
    rows.append(ReconcileRow("experts_per_token", k_router, e.mean,
                             None if k_router is None or e.mean is None else e.mean - k_router,
                             _experts_cause(rt), _k_detail(rt)))
    if k_cfg is not None and k_cfg != k_router:
        at_cfg = active_per_token(static.params.total, static.params.by_group, static.moe.layers,
                                  static.params.lm_head_tied, top_ks=[k_cfg] * len(static.moe.layers))["all"]
        rows.append(ReconcileRow("active_params_per_token_at_config_k", at_cfg, m.mean, m.mean - at_cfg,
                                 Cause.CONFIG_K_IGNORED, _k_detail(rt)))
    total = static.params.total
    if rt.params_touched is None:
        return tuple(rows)
    rows.append(ReconcileRow("params_touched", total, rt.params_touched, rt.params_touched - total,
                             Cause.ALL_EXPERTS_USED if rt.params_touched == total else Cause.SOME_EXPERTS_UNUSED))
    return tuple(rows)


def _k_detail(rt: RuntimeInfo) -> dict[str, Any]:
    return {"k_config": rt.top_k["config"], "k_router": rt.top_k["router"], "k_measured": rt.top_k["measured"]}


def _active_cause(static: CountResult, rt: RuntimeInfo) -> Cause:
    m = rt.active_params_per_token["all"]
    if static.moe is None:
        return Cause.DENSE
    if m.min == m.max == static.params.active_per_token["all"]:
        return Cause.EQUAL
    return _experts_cause(rt) if _experts_cause(rt) is not Cause.EQUAL else Cause.DIFFERS


def _experts_cause(rt: RuntimeInfo) -> Cause:
    """Blame experts per token only where it differs from the router's k."""
    e, k_router, k_meas = rt.experts_per_token, rt.top_k["router"], rt.top_k["measured"]
    if e.min is not None and k_router is not None and e.min < k_router:
        return Cause.FEWER_EXPERTS_THAN_K
    if k_meas is not None and k_router is not None and k_meas != k_router:
        return Cause.K_CHANGED
    if e.count and e.min == e.max == k_router:
        return Cause.EQUAL
    return Cause.DIFFERS


__all__ = ["ReconcileRow", "reconcile"]
