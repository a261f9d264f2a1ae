"""``runprof.routing.bench``: what each top-k costs and does, measured.

For each k (set with :func:`runprof.set_top_k`, restored when its ``with`` block ends) and batch size: warm-up runs,
then repeated timed ``generate()`` runs under :func:`runprof.track`; tokens/s of prefill and decode
(:mod:`runprof.routing.timing`), measured experts and active params per token vs the static figure,
routing statistics of the first timed run, and the mean log-likelihood of the prompt under k.

A batch of B rows holds B rotations of the prompt (:func:`batch_rows`): rows of equal length (no padding)
that differ, because B identical rows route identically and would show k experts per decode step where a
real batch touches up to E·(1 − (1 − k/E)^B).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import InvalidArgumentError, UnsupportedModelError
from ..moe.discovery import config_top_k, find_moe_layers
from ..moe.topk import set_top_k
from ..results import ModelInfo, Stat, check_header, header
from ..results.common import Env, fill_env, restore_env
from ..static import model_info
from ..tracking import watch
from .likelihood import PromptScore, score_prompt
from .stats import RoutingStats, routing_stats
from .timing import TIMING_METHOD, Spread, StepClock

log = logging.getLogger("runprof")


@dataclass(frozen=True)
class BenchRun:
    """One (top-k, batch size) cell: timings over ``repeats`` runs, what was measured, routing statistics."""

    top_k: int
    batch_size: int
    tokens: dict[str, int]  # real tokens per run: {"prefill", "decode"}
    prefill_s: tuple[float, ...]
    decode_s: tuple[float, ...]
    prefill_tokens_per_s: Spread
    decode_tokens_per_s: Spread
    experts_per_token: Stat
    active_params_per_token: Stat
    static_active_params_per_token: int
    top_k_measured: int | None
    score: PromptScore
    routing: RoutingStats

    def to_dict(self) -> dict[str, Any]:
        routing = self.routing.to_dict()
        for layer, router in zip(routing, self.score.router or ()):
            layer["router_on_prompt"] = None if router is None else router.to_dict()
        return {
            "top_k": self.top_k, "batch_size": self.batch_size,
            "experts_per_token": self.experts_per_token.to_dict(),
            "active_params_per_token": self.active_params_per_token.to_dict(),
            "static_active_params_per_token": self.static_active_params_per_token,
            "top_k_measured": self.top_k_measured,
            "prefill_tokens_per_s": self.prefill_tokens_per_s.to_dict(),
            "decode_tokens_per_s": self.decode_tokens_per_s.to_dict(),
            "tokens": dict(self.tokens), "prefill_s": list(self.prefill_s), "decode_s": list(self.decode_s),
            "mean_logprob": self.score.mean_logprob, "score": self.score.to_dict(), "routing": routing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchRun:
        layers = d["routing"].values() if isinstance(d["routing"], dict) else d["routing"]  # a dict before 0.1
        routing = [{k: v for k, v in layer.items() if k != "router_on_prompt"} for layer in layers]
        return cls(
            top_k=d["top_k"], batch_size=d["batch_size"], tokens=dict(d["tokens"]),
            prefill_s=tuple(d["prefill_s"]), decode_s=tuple(d["decode_s"]),
            prefill_tokens_per_s=Spread.from_dict(d["prefill_tokens_per_s"]),
            decode_tokens_per_s=Spread.from_dict(d["decode_tokens_per_s"]),
            experts_per_token=Stat.from_dict(d["experts_per_token"]),
            active_params_per_token=Stat.from_dict(d["active_params_per_token"]),
            static_active_params_per_token=d["static_active_params_per_token"],
            top_k_measured=d["top_k_measured"], score=PromptScore.from_dict(d["score"]),
            routing=RoutingStats.from_dict(routing),
        )


@dataclass(frozen=True)
class BenchResult:
    """Every cell of a bench, the model's own k and its prompt score, and how timing was done."""

    model: ModelInfo
    num_experts: int
    top_k_original: int | None
    top_k_restored: bool
    prompt_tokens: int
    max_new_tokens: int
    warmup: int
    repeats: int
    reference: PromptScore  # the prompt scored at the model's own k
    runs: tuple[BenchRun, ...]
    cpu_threads: int
    timing_method: str = TIMING_METHOD
    notes: tuple[str, ...] = ()  # how the model was made (random weights, a substituted tokenizer, ...)
    env: Env | None = field(default=None, compare=False)  # versions, device, time: filled when made

    def __post_init__(self) -> None:
        fill_env(self, self.model.device)

    def to_dataframe(self, what: str) -> Any:
        """One table as a ``pandas.DataFrame``: ``runs``, ``layers`` or ``expert_load``
        (:mod:`runprof.results.frames`; needs ``pip install runprof[frames]``)."""
        from ..results.frames import to_dataframe

        return to_dataframe(self, what)

    def to_dict(self) -> dict[str, Any]:
        return {
            **header("bench", self.env), "model": self.model.to_dict(), "num_experts": self.num_experts,
            "top_k_original": self.top_k_original, "top_k_restored": self.top_k_restored,
            "prompt_tokens": self.prompt_tokens, "max_new_tokens": self.max_new_tokens,
            "warmup": self.warmup, "repeats": self.repeats, "cpu_threads": self.cpu_threads,
            "timing_method": self.timing_method, "notes": list(self.notes),
            "mean_logprob_original": self.reference.mean_logprob, "reference": self.reference.to_dict(),
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        check_header(d, "bench")
        return restore_env(cls(
            model=ModelInfo.from_dict(d["model"]), num_experts=d["num_experts"],
            top_k_original=d["top_k_original"], top_k_restored=d["top_k_restored"],
            prompt_tokens=d["prompt_tokens"], max_new_tokens=d["max_new_tokens"], warmup=d["warmup"],
            repeats=d["repeats"], reference=PromptScore.from_dict(d["reference"]),
            runs=tuple(BenchRun.from_dict(r) for r in d["runs"]), cpu_threads=d["cpu_threads"],
            timing_method=d["timing_method"], notes=tuple(d.get("notes", ())),
        ), d)


MAX_BATCH_ROWS = 1 << 16
"""The most rows a bench cell may run (its rows are rotations of one prompt)."""


def check_plan(top_ks: Sequence[int] | None, batch_sizes: Sequence[int], repeats: int, warmup: int,
               max_new_tokens: int, num_experts: int | None = None) -> None:
    """Validate a bench plan without a model (``num_experts``: the top-k bound, when known)."""
    e = num_experts
    for param, values, low, high in (("top_ks", top_ks, 1, e), ("batch_sizes", batch_sizes, 1, MAX_BATCH_ROWS)):
        if values is None:
            continue
        if not values:
            raise InvalidArgumentError.bad(param, list(values), "give at least one value")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
                rng = (f"{low}..{high} (this model has {e} experts per layer)" if param == "top_ks" else
                       f"{low}..{high}") if high else f"at least {low}"
                raise InvalidArgumentError.bad(param, v, f"expected an integer {rng}")
        if len(set(values)) != len(values):
            raise InvalidArgumentError.bad(param, list(values), "a value is repeated")
    for param, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10_000:
            raise InvalidArgumentError.bad(param, value, f"expected an integer {low}..10,000")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 2:
        raise InvalidArgumentError.bad("max_new_tokens", max_new_tokens, "expected at least 2 (one prefill, one decode)")


def not_moe(name: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{name} is not a mixture-of-experts model: bench compares top-k values; a dense "
                                 "model has one: track a plain run of it instead")


def check_bench_args(model: nn.Module, top_ks: Sequence[int], batch_sizes: Sequence[int], repeats: int,
                     warmup: int, max_new_tokens: int, name: str | None = None) -> int:
    """Validate the bench plan against the model; return the number of experts per layer (the smallest)."""
    layers = find_moe_layers(model)
    if not layers:
        raise not_moe(f"{name or type(model).__name__} ({type(model).__name__})")
    e = min(layer.num_experts for layer in layers)
    check_plan(top_ks, batch_sizes, repeats, warmup, max_new_tokens, e)
    return e


def bench(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    top_ks: Sequence[int],
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 3,
    warmup: int = 1,
    max_new_tokens: int = 16,
    pad_token_id: int | None = None,
    name: str | None = None,
    on_generate: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark ``model`` at each top-k and batch size on one prompt (``input_ids``, ``[L]`` or ``[1, L]``).

    The model's k is restored on every exit path. Timed runs are tracked with routing capture only
    (one :func:`runprof.watch` over the sweep, one record per timed run), greedy, exactly ``max_new_tokens`` tokens (``min_new_tokens``);
    routing statistics come from the first timed run of each cell. ``on_generate`` is called after each
    ``generate()`` (for a progress bar).

    >>> from transformers import MixtralConfig, AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_config(MixtralConfig(hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)).eval()
    >>> r = bench(model, torch.arange(3, 19), top_ks=[1, 4], repeats=1, max_new_tokens=3)
    >>> [(run.top_k, run.experts_per_token.min, run.experts_per_token.max) for run in r.runs]
    [(1, 1, 1), (4, 4, 4)]
    >>> r.top_k_restored, model.model.layers[0].mlp.gate.top_k
    (True, 2)
    """
    e = check_bench_args(model, top_ks, batch_sizes, repeats, warmup, max_new_tokens, name)
    device = next(model.parameters()).device
    ids = input_ids.reshape(1, -1).to(device)
    if ids.shape[1] < 2:
        raise InvalidArgumentError(f"the prompt is {ids.shape[1]} token(s): bench needs at least 2")
    before = _top_k_state(model)
    k0 = before[0][0]
    reference = score_prompt(model, ids, top_k=k0)
    runs: list[BenchRun] = []
    with watch(model, per="call", name=name, trace=True, weights=True) as w:  # hooks installed once
        for k in top_ks:
            with set_top_k(model, k):  # restored on every exit path
                score = reference if k == k0 else score_prompt(model, ids, top_k=k)
                for b in batch_sizes:
                    runs.append(_bench_cell(w, model, batch_rows(ids, b), k, repeats, warmup, max_new_tokens,
                                            pad_token_id, score, on_generate))
    return BenchResult(model=model_info(model, name), num_experts=e, top_k_original=k0,
                       top_k_restored=_top_k_state(model) == before,
                       prompt_tokens=int(ids.shape[1]), max_new_tokens=max_new_tokens, warmup=warmup,
                       repeats=repeats, reference=reference, runs=tuple(runs), cpu_threads=torch.get_num_threads())


def _top_k_state(model: nn.Module) -> tuple[tuple[int | None, ...], int | None]:
    """Every MoE layer's k as its router holds it, and the config's k."""
    return tuple(layer.top_k for layer in find_moe_layers(model)), config_top_k(getattr(model, "config", None))


def batch_rows(input_ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``batch_size`` rows of the prompt ``[1, L]``: row b keeps token 0 (BOS) and rotates the rest left by
    b·(L − 1)//B tokens, so rows differ but have the same length.

    >>> batch_rows(torch.tensor([[1, 10, 11, 12, 13]]), 2).tolist()
    [[1, 10, 11, 12, 13], [1, 12, 13, 10, 11]]
    """
    head, rest = input_ids[:, :1], input_ids[0, 1:]
    rows = [torch.roll(rest, -(b * rest.numel() // batch_size)) for b in range(batch_size)]
    return torch.cat([head.repeat(batch_size, 1), torch.stack(rows)], dim=1)


def _bench_cell(w: Any, model: nn.Module, ids: torch.Tensor, k: int, repeats: int, warmup: int, new: int,
                pad: int | None, score: PromptScore, on_generate: Callable[[str], None] | None) -> BenchRun:
    clock = StepClock(ids.device)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                  pad_token_id=pad, logits_processor=[clock.processor()])
    label = f"k={k} batch={ids.shape[0]}"
    with torch.inference_mode():
        for _ in range(warmup):
            model.generate(ids, **kwargs)
            if on_generate:
                on_generate(f"{label} warm-up")
        results, prefill_s, decode_s, trace = [], [], [], None
        for i in range(repeats):  # one watch record per timed run; statistics from the first run's trace
            with w.call():
                clock.start()
                model.generate(ids, **kwargs)
            p, d = clock.prefill_decode_s()
            prefill_s.append(p)
            decode_s.append(d)
            results.append(w.collect()[-1])
            trace = w.traces[-1] if i == 0 else trace
            if on_generate:
                on_generate(label)
    rt = results[0].runtime
    tokens = {"prefill": int(rt.tokens.get("prefill", 0)), "decode": int(rt.tokens.get("decode", 0))}
    return BenchRun(
        top_k=k, batch_size=int(ids.shape[0]), tokens=tokens, prefill_s=tuple(prefill_s), decode_s=tuple(decode_s),
        prefill_tokens_per_s=Spread.of([tokens["prefill"] / s for s in prefill_s if s > 0]),
        decode_tokens_per_s=Spread.of([tokens["decode"] / s for s in decode_s if s]),
        experts_per_token=sum((r.runtime.experts_per_token for r in results), Stat()),
        active_params_per_token=sum((r.runtime.active_params_per_token["all"] for r in results), Stat()),
        static_active_params_per_token=results[0].params.active_per_token["all"],
        top_k_measured=rt.top_k["measured"], score=score, routing=routing_stats(trace),
    )


__all__ = ["BenchResult", "BenchRun", "batch_rows", "bench", "check_bench_args", "check_plan"]
