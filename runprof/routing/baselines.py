"""Closed forms for routing under the null model: every token picks a uniformly random set of k of E
experts, independently of every other token.

These are the baselines the measured statistics in :mod:`runprof.routing.stats` are compared with.
"""
from __future__ import annotations

from fractions import Fraction
from math import comb

from ..errors import InvalidArgumentError


def _check(num_experts: int, top_k: int) -> None:
    if not 1 <= top_k <= num_experts:
        raise InvalidArgumentError(f"top-k {top_k} with {num_experts} experts: expected 1 <= k <= E")


def overlap_distribution(num_experts: int, top_k: int) -> list[Fraction]:
    """P(|A ∩ B| = j), j = 0..k, for two independent random k-subsets of E experts (hypergeometric).

    >>> [str(p) for p in overlap_distribution(8, 2)]  # C(6,2)/C(8,2), 2*6/C(8,2), 1/C(8,2)
    ['15/28', '3/7', '1/28']
    """
    _check(num_experts, top_k)
    total = comb(num_experts, top_k)
    return [Fraction(comb(top_k, j) * comb(num_experts - top_k, top_k - j), total) for j in range(top_k + 1)]


def random_first_choice(num_experts: int, top_k: int = 1) -> float:
    """Chance that two tokens' highest-weight experts are the same: 1/E.

    >>> random_first_choice(8)
    0.125
    """
    _check(num_experts, top_k)
    return 1.0 / num_experts


def random_any_overlap(num_experts: int, top_k: int) -> float:
    """Chance that two tokens' top-k sets share at least one expert: 1 − C(E−k, k)/C(E, k).

    >>> round(random_any_overlap(8, 2), 4)  # 1 - 15/28 = 13/28
    0.4643
    """
    _check(num_experts, top_k)
    return float(1 - Fraction(comb(num_experts - top_k, top_k), comb(num_experts, top_k)))


def random_jaccard(num_experts: int, top_k: int) -> float:
    """Expected Jaccard index |A∩B| / |A∪B| of two random k-subsets: Σ_j P(j) · j / (2k − j).

    >>> round(random_jaccard(8, 2), 5)  # 12/28 * 1/3 + 1/28 * 2/2 = 5/28
    0.17857
    """
    return float(sum(p * Fraction(j, 2 * top_k - j) for j, p in enumerate(overlap_distribution(num_experts, top_k))))


def random_coactivation(num_experts: int, top_k: int) -> float:
    """P(b | a) for b ≠ a under random routing: (k − 1)/(E − 1) (0 for a single expert).

    >>> random_coactivation(8, 2)  # 1/7
    0.14285714285714285
    """
    _check(num_experts, top_k)
    return (top_k - 1) / (num_experts - 1) if num_experts > 1 else 0.0


def expected_distinct(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected number of distinct experts B independent tokens touch: E · (1 − (1 − k/E)^B).

    >>> [round(expected_distinct(8, 2, b), 1) for b in (1, 4, 16)]  # Mixtral: 2.0, 5.5, 7.9
    [2.0, 5.5, 7.9]
    """
    _check(num_experts, top_k)
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


__all__ = [
    "expected_distinct",
    "overlap_distribution",
    "random_any_overlap",
    "random_coactivation",
    "random_first_choice",
    "random_jaccard",
]
