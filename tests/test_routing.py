"""Routing statistics on hand-built traces (exact values, arithmetic in comments) and the random baselines
against their closed forms and brute-force enumeration."""
from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations

import pytest
import torch

from runprof.routing.baselines import (
    expected_distinct,
    random_any_overlap,
    random_coactivation,
    random_first_choice,
    random_jaccard,
)
from runprof.routing.router import router_distribution
from runprof.routing.stats import RoutingStats, layer_stats, routing_stats
from runprof.tracking.trace import LayerTrace, StepTrace


def calls(e: int, ids: list[list[int]], step: list[int], position: list[int], *,
          weights: list[list[float]] | None = None, real: list[bool] | None = None) -> LayerTrace:
    """A LayerTrace from Python lists (params per expert 10, irrelevant to routing statistics)."""
    n = len(ids)
    return LayerTrace(
        name="L", num_experts=e, params_per_expert=10, ids=torch.tensor(ids, dtype=torch.long),
        weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
        step=torch.tensor(step, dtype=torch.long), position=torch.tensor(position, dtype=torch.long),
        real=torch.ones(n, dtype=torch.bool) if real is None else torch.tensor(real),
    )


def one_prefill(e: int, ids: list[list[int]], **kw) -> tuple[LayerTrace, tuple[StepTrace, ...]]:
    """One sequence of len(ids) tokens in a single prefill step."""
    n = len(ids)
    return calls(e, ids, [0] * n, list(range(n)), **kw), (StepTrace("prefill", 1, n, None),)


# --- hand-built traces ------------------------------------------------------------------------------
def test_uniform_top1_cycle():
    # E=4, k=1, tokens 0,1,2,3,0,1,2,3: every expert twice
    c, steps = one_prefill(4, [[0], [1], [2], [3], [0], [1], [2], [3]])
    s = layer_stats(c, steps, "L0")
    assert s.load == (2, 2, 2, 2) and s.load_share == (0.25,) * 4 and s.uniform_share == 0.25
    assert s.max_over_mean_load == 1.0  # 2 / (8 / 4)
    assert s.load_cv == 0.0
    assert s.load_entropy_normalized == pytest.approx(1.0, abs=1e-12)  # ln 4 / ln 4
    # f_e = 2/8 = 1/4; (E/k) * sum f^2 = 4 * 4 * 1/16 = 1 = k
    assert s.load_balancing_loss_from_load == pytest.approx(1.0, abs=1e-12)
    # 7 consecutive pairs, no two neighbours share an expert
    assert (s.pairs, s.first_choice_repeat, s.any_overlap_repeat, s.jaccard_repeat) == (7, 0.0, 0.0, 0.0)
    # random, E=4, k=1: first 1/4; any 1 - C(3,1)/C(4,1) = 1/4; Jaccard P(1)*1/1 = 1/4
    assert (s.first_choice_random, s.any_overlap_random, s.jaccard_random) == (0.25, 0.25, 0.25)
    # k=1: a token never co-activates two experts: P(b|a) = 1 on the diagonal, 0 elsewhere
    assert s.coactivation == tuple(tuple(1.0 if a == b else 0.0 for b in range(4)) for a in range(4))
    assert s.coactivation_random == 0.0
    assert s.decode_steps == 0 and s.decode_distinct_mean is None
    assert s.top1_weight_mean is None and any("no weights" in note for note in s.notes)


def test_uniform_top2_every_pair_once():
    # E=4, k=2: the 6 pairs of experts once each -> every expert in 3 of 6 tokens
    ids = [[0, 1], [2, 3], [0, 2], [1, 3], [0, 3], [1, 2]]
    c, steps = one_prefill(4, ids, weights=[[0.6, 0.4]] * 6)
    s = layer_stats(c, steps)
    assert s.load == (3, 3, 3, 3) and s.load_cv == 0.0
    # f_e = 3/6 = 1/2; (4/2) * 4 * 1/4 = 2 = k
    assert s.load_balancing_loss_from_load == pytest.approx(2.0, abs=1e-12)
    # consecutive sets: {01,23} 0 shared; {23,02} {2} J=1/3; {02,13} 0; {13,03} {3} J=1/3; {03,12} 0
    assert s.pairs == 5
    assert s.any_overlap_repeat == pytest.approx(2 / 5)
    assert s.jaccard_repeat == pytest.approx((1 / 3 + 1 / 3) / 5)  # 2/15
    # first choice = higher weight = first id: 0,2,0,1,0,1 -> no neighbours equal
    assert s.first_choice_repeat == 0.0
    # random E=4, k=2: any = 1 - C(2,2)/C(4,2) = 5/6; Jaccard = 4/6 * 1/3 + 1/6 * 1 = 7/18
    assert s.any_overlap_random == pytest.approx(5 / 6)
    assert s.jaccard_random == pytest.approx(7 / 18)
    # each pair co-occurs once, N(a) = 3: P(b|a) = 1/3 = (k-1)/(E-1), the random value
    for a in range(4):
        for b in range(4):
            assert s.coactivation[a][b] == pytest.approx(1.0 if a == b else 1 / 3)
    assert s.coactivation_random == pytest.approx(1 / 3)
    assert s.top1_weight_mean == pytest.approx(0.6)
    # H(0.6, 0.4) / ln 2 = -(0.6 ln 0.6 + 0.4 ln 0.4) / ln 2 = 0.970951
    assert s.weights_entropy_normalized == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)) / math.log(2))


def test_collapsed():
    # E=8, k=1: five tokens all on expert 3
    c, steps = one_prefill(8, [[3]] * 5, weights=[[1.0]] * 5)
    s = layer_stats(c, steps)
    assert s.load == (0, 0, 0, 5, 0, 0, 0, 0) and s.load_share[3] == 1.0
    assert s.max_over_mean_load == 8.0  # 5 / (5/8) = E
    # mean 5/8, variance (1/8)((5 - 5/8)^2 + 7 (5/8)^2) = 2.734375 -> CV = 1.6536 / 0.625 = sqrt(7)
    assert s.load_cv == pytest.approx(math.sqrt(7))
    assert s.load_entropy_normalized == 0.0
    assert s.load_balancing_loss_from_load == pytest.approx(8.0)  # (8/1) * 1^2 = E
    assert (s.pairs, s.first_choice_repeat, s.any_overlap_repeat, s.jaccard_repeat) == (4, 1.0, 1.0, 1.0)
    assert s.coactivation[3][3] == 1.0 and s.coactivation[0] == (None,) * 8  # expert 0 never ran
    assert s.top1_weight_mean == 1.0 and s.weights_entropy_normalized is None  # one weight per token

    # E=8, k=2, every token on {0, 1}: f = (1, 1, 0, ...), (8/2) * (1 + 1) = 8 = E
    c, steps = one_prefill(8, [[0, 1], [1, 0], [0, 1]])
    s = layer_stats(c, steps)
    assert s.load_balancing_loss_from_load == pytest.approx(8.0)
    assert s.max_over_mean_load == 4.0  # 3 / (6/8)
    assert s.load_entropy_normalized == pytest.approx(math.log(2) / math.log(8))  # two equal shares: 1/3
    # no weights: first choice is the first id: 0, 1, 0 -> never equal; the sets are always equal
    assert (s.first_choice_repeat, s.any_overlap_repeat, s.jaccard_repeat) == (0.0, 1.0, 1.0)


def test_alternating_prefill_then_decode():
    # E=2, k=1, batch 1: a 2-token prefill (0, 1) then 4 decode steps (0, 1, 0, 1): perfectly alternating
    steps = [StepTrace("prefill", 1, 2, None)] + [StepTrace("decode", 1, 1, None)] * 4
    c = calls(2, [[0], [1], [0], [1], [0], [1]], step=[0, 0, 1, 2, 3, 4], position=[0, 1, 0, 0, 0, 0])
    s = layer_stats(c, steps)
    assert s.load == (3, 3) and s.load_cv == 0.0 and s.load_entropy_normalized == pytest.approx(1.0)
    assert (s.pairs, s.first_choice_repeat, s.any_overlap_repeat, s.jaccard_repeat) == (5, 0.0, 0.0, 0.0)
    assert s.first_choice_random == 0.5 and s.any_overlap_random == 0.5  # 1/E; 1 - C(1,1)/C(2,1)
    # each decode step has one token and touches one expert; uniform: 2 * (1 - (1 - 1/2)^1) = 1
    assert (s.decode_steps, s.decode_distinct_mean, s.decode_distinct_uniform) == (4, 1.0, 1.0)


def test_sequences_rows_generations_and_padding():
    # batch 2, prefill of 3 (row 0 left-padded at t=0), then 2 decode steps of batch 2.
    # Row 0 always picks expert 0 (its padding slot routes to 5), row 1 always picks expert 1.
    steps = [StepTrace("prefill", 2, 3, torch.tensor([False, True, True, True, True, True]))] + \
        [StepTrace("decode", 2, 1, None)] * 2
    ids = [[5], [0], [0], [1], [1], [1], [0], [1], [0], [1]]
    step = [0] * 6 + [1, 1, 2, 2]
    position = [0, 1, 2, 3, 4, 5, 0, 1, 0, 1]
    real = [False] + [True] * 9
    s = layer_stats(calls(8, ids, step, position, real=real), steps)
    assert s.tokens == 9 and s.load[:2] == (4, 5) and s.load[5] == 0  # the padded row is not counted
    # row 0: 2 prefill + 2 decode tokens -> 3 pairs; row 1: 3 + 2 -> 4 pairs; no pair across rows
    assert s.pairs == 7 and s.first_choice_repeat == 1.0 and s.any_overlap_repeat == 1.0
    # every decode step: 2 tokens on experts {0, 1}; uniform: 8 * (1 - (7/8)^2) = 15/8
    assert (s.decode_distinct_mean, s.decode_distinct_min, s.decode_distinct_max) == (2.0, 2, 2)
    assert s.decode_distinct_uniform == pytest.approx(15 / 8)
    assert s.decode_tokens_per_step_mean == 2.0

    # two generations (two prefills of 2 tokens): 0,0 | 1,1 -> 2 pairs, both repeats; joined, the last
    # token of one and the first of the next would add a 0->1 pair
    steps = [StepTrace("prefill", 1, 2, None), StepTrace("prefill", 1, 2, None)]
    s = layer_stats(calls(4, [[0], [0], [1], [1]], [0, 0, 1, 1], [0, 1, 0, 1]), steps)
    assert (s.pairs, s.first_choice_repeat) == (2, 1.0)


def test_empty_layer_and_round_trip():
    empty = torch.zeros(0, dtype=torch.long)
    s = layer_stats(LayerTrace("L", 4, 10, torch.zeros(0, 2, dtype=torch.long), None, empty, empty,
                               torch.zeros(0, dtype=torch.bool)), ())
    assert (s.tokens, s.load, s.load_share, s.pairs) == (0, (0, 0, 0, 0), (0.0,) * 4, 0)
    nones = ("max_over_mean_load", "load_cv", "load_entropy_normalized", "load_balancing_loss_from_load",
             "first_choice_repeat", "any_overlap_repeat", "jaccard_repeat", "decode_distinct_mean",
             "top1_weight_mean", "weights_entropy_normalized")
    assert all(getattr(s, f) is None for f in nones)
    assert s.notes == ("no routed tokens: load statistics are undefined",
                       "no consecutive token pairs: repeat rates are undefined",
                       "no decode steps: distinct experts per decode step are undefined",
                       "the router passed no weights: confidence is unknown")
    assert s.coactivation == ((None,) * 4,) * 4
    c, steps = one_prefill(4, [[0, 1], [2, 3], [0, 2]], weights=[[0.7, 0.3]] * 3)
    r = RoutingStats((layer_stats(c, steps, "a"), layer_stats(c, steps, "b")))
    assert RoutingStats.from_dict(r.to_dict()) == r
    assert [x["name"] for x in r.to_dict()] == ["a", "b"]  # a list of records, each with its name


# --- baselines ------------------------------------------------------------------------------------
def test_baselines():
    assert random_any_overlap(8, 2) == pytest.approx(13 / 28)  # 1 - 15/28 = 46.4%, not 25%
    assert round(100 * random_any_overlap(8, 2), 1) == 46.4
    assert random_first_choice(8) == 0.125
    assert random_jaccard(8, 2) == pytest.approx(5 / 28)  # 12/28 * 1/3 + 1/28 * 1
    assert random_coactivation(8, 2) == pytest.approx(1 / 7)
    # Mixtral (E=8, k=2): 8 (1 - 0.75^B) = 2.0, 5.47, 7.92 at B = 1, 4, 16
    # 0.75^4 = 0.316406 -> 5.46875; 0.75^16 = 0.010023 -> 7.919819
    assert [expected_distinct(8, 2, b) for b in (1, 4, 16)] == pytest.approx([2.0, 5.46875, 7.919819], abs=1e-6)
    # exact averages over every ordered pair of k-subsets (the random-routing null model)
    for e, k in ((e, k) for e in (2, 3, 5, 6) for k in range(1, e + 1)):
        sets = [set(s) for s in combinations(range(e), k)]
        pairs = [(a, b) for a in sets for b in sets]
        overlap = Fraction(sum(1 for a, b in pairs if a & b), len(pairs))
        jaccard = sum(Fraction(len(a & b), len(a | b)) for a, b in pairs) / len(pairs)
        co = Fraction(sum(1 for s in sets if {0, 1} <= s), sum(1 for s in sets if 0 in s))  # P(1 | 0)
        assert random_any_overlap(e, k) == pytest.approx(float(overlap), abs=1e-12)
        assert random_jaccard(e, k) == pytest.approx(float(jaccard), abs=1e-12)
        assert random_coactivation(e, k) == pytest.approx(float(co), abs=1e-12)
        # distinct experts of B=2 tokens: E[|A ∪ B|]
        union = Fraction(sum(len(a | b) for a, b in pairs), len(pairs))
        assert expected_distinct(e, k, 2) == pytest.approx(float(union), abs=1e-12)


# --- router distribution --------------------------------------------------------------------------
def test_router_distribution():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    g = torch.Generator().manual_seed(0)
    for e, k in ((8, 2), (4, 1), (6, 3)):
        logits = torch.randn(40, e, generator=g) * 2
        ours = router_distribution(logits, k).load_balancing_loss
        assert ours == pytest.approx(float(load_balancing_loss_func((logits,), e, k)), rel=1e-5)
    # balanced: token t is sure of expert t % 4 -> f_e = 1/4, P_e = 1/4 by symmetry: 4 * 4 * 1/16 = 1 = k
    balanced = torch.eye(4).repeat(2, 1) * 50
    assert router_distribution(balanced, 1).load_balancing_loss == pytest.approx(1.0)
    # collapsed: every token sure of expert 0 -> f_0 = 1, P_0 = 1: 4 * 1 = E
    collapsed = torch.zeros(5, 4)
    collapsed[:, 0] = 50
    d = router_distribution(collapsed, 1)
    assert d.load_balancing_loss == pytest.approx(4.0) and d.top1_prob_mean == pytest.approx(1.0)
    assert d.entropy_normalized == pytest.approx(0.0, abs=1e-12)
    mask = torch.tensor([True, False, True, False, False])
    assert router_distribution(collapsed, 1, mask).tokens == 2


# --- a tracked run --------------------------------------------------------------------------------
def _sequences(layer: LayerTrace, steps) -> dict[int, list[int]]:
    """Row indices of each batch row's real tokens in order (prefill positions, then decode steps)."""
    seqs: dict[int, list[int]] = {}
    for i in range(layer.ids.shape[0]):
        if layer.real[i]:
            st, pos = steps[int(layer.step[i])], int(layer.position[i])
            seqs.setdefault(pos // st.seq, []).append(i)
    return seqs


def test_stats_of_a_tracked_run_equal_a_hand_count_from_the_trace():
    """Every statistic of a tracked run, recomputed here in plain Python from the trace's ids and weights."""
    import runprof

    from .moe_zoo import tiny_model

    model = tiny_model("mixtral")
    ids = torch.arange(3, 3 + 2 * 6).reshape(2, 6)
    with torch.inference_mode(), runprof.track(model, trace=True, weights=True) as t:
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                       do_sample=False, pad_token_id=0)
    r = routing_stats(t.trace)
    assert len(r.layers) == len(t.trace.layer_names) == 2
    for s, layer in zip(r.layers, t.trace.layers):
        chosen = [set(row) for row in layer.ids.tolist()]
        first = [row[max(range(2), key=lambda j: w[j])] for row, w in zip(layer.ids.tolist(), layer.weights.tolist())]
        assert s.tokens == len(chosen) == 2 * (6 + 3)  # 2 rows x (6 prompt tokens + 3 decode steps)
        assert s.load == tuple(sum(e in c for c in chosen) for e in range(8))
        pairs = [(a, b) for seq in _sequences(layer, t.trace.steps).values() for a, b in zip(seq, seq[1:])]
        assert s.pairs == len(pairs) == s.tokens - 2
        assert s.first_choice_repeat == sum(first[a] == first[b] for a, b in pairs) / len(pairs)
        assert s.any_overlap_repeat == sum(bool(chosen[a] & chosen[b]) for a, b in pairs) / len(pairs)
        assert s.jaccard_repeat == pytest.approx(
            sum(len(chosen[a] & chosen[b]) / len(chosen[a] | chosen[b]) for a, b in pairs) / len(pairs), abs=1e-12)
        for a in range(8):
            with_a = [c for c in chosen if a in c]
            expect = [None if not with_a else sum(b in c for c in with_a) / len(with_a) for b in range(8)]
            assert list(s.coactivation[a]) == pytest.approx(expect, abs=1e-12) if with_a else \
                list(s.coactivation[a]) == expect
        decode = sorted({int(x) for x, st in zip(layer.step, layer.step) if t.trace.steps[int(x)].phase == "decode"})
        distinct = [len(set().union(*(chosen[i] for i in range(len(chosen)) if int(layer.step[i]) == d)))
                    for d in decode]
        assert (s.decode_steps, s.decode_distinct_mean) == (3, sum(distinct) / 3)
        assert (s.decode_distinct_min, s.decode_distinct_max) == (min(distinct), max(distinct))
        assert s.top1_weight_mean == pytest.approx(sum(max(w) for w in layer.weights.tolist()) / s.tokens)
    assert RoutingStats.from_dict(r.to_dict()) == r
