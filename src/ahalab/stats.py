"""Means, 95% intervals and paired differences: the statistics eval, scaling and report all use."""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

# Student t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal quantile).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def interval(xs: Sequence[float]) -> tuple[float, float]:
    """95% t-interval for the mean of ``xs`` (zero width for fewer than two values or no spread)."""
    m, n = mean(xs), len(xs)
    if n < 2:
        return m, m
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else NormalDist().inv_cdf(0.975)
    return m - t * sd / math.sqrt(n), m + t * sd / math.sqrt(n)


def ci_text(lo: float, hi: float) -> str:
    return f"[{lo:.3f}, {hi:.3f}]"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Mean of ``a - b`` over paired items (the same problems) and its 95% interval."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return mean(diffs), interval(diffs)
