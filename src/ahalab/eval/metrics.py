"""Evaluation metrics: unbiased pass@k, majority vote by answer equivalence, maj@k."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws without replacement is correct)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n (k={k}, n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_vote(answers: Sequence[str | None], equivalent: Callable[[str, str], bool],
                  weights: Sequence[float] | None = None) -> tuple[str | None, int, float]:
    """Group answers by equivalence and pick the group with the largest total weight (default: count).

    Returns (answer, index of the group's first member, the group's share of the total weight).
    None answers never win. Ties go to the group seen first. Identical strings are grouped
    without calling ``equivalent``; each distinct string is compared once per group.
    """
    weights = list(weights) if weights is not None else [1.0] * len(answers)
    groups: list[list] = []  # [representative, first index, weight]
    by_string: dict[str, list] = {}
    for i, (a, w) in enumerate(zip(answers, weights)):
        if a is None:
            continue
        group = by_string.get(a)
        if group is None:
            group = next((g for g in groups if safe_equivalent(equivalent, g[0], a)), None)
            if group is None:
                group = [a, i, 0.0]
                groups.append(group)
            by_string[a] = group
        group[2] += w
    total = sum(w for a, w in zip(answers, weights) if a is not None)
    if not groups:
        return None, -1, 0.0
    best = max(groups, key=lambda g: g[2])  # max keeps the first of equal maxima
    return best[0], best[1], (best[2] / total if total > 0 else 0.0)


def safe_equivalent(equivalent: Callable[[str, str], bool], a: str, b: str) -> bool:
    """``equivalent(a, b)``, False where it raises (an unparseable answer matches nothing)."""
    try:
        return bool(equivalent(a, b))
    except Exception:
        return False


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]
