"""The little statistics the monitors need: medians and Welch's t-test.

Hand-written because the host app must not pull in SciPy for one p-value: the Student t tail comes
from the regularised incomplete beta function (a Lentz continued fraction, as in Numerical Recipes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean, median

__all__ = ["fmean", "median", "one_sample_t", "t_tail", "welch_t"]


def welch_t(
    after: Sequence[float], before: Sequence[float], *, floor_after_variance: bool = False
) -> tuple[float, float]:
    """(t, degrees of freedom) of Welch's test that `after`'s mean exceeds `before`'s; (0, 1) when
    either sample has fewer than two values. `floor_after_variance`: `after`'s sample variance is
    taken as at least `before`'s (a few values that happen to agree prove little)."""
    n_a, n_b = len(after), len(before)
    if n_a < 2 or n_b < 2:
        return 0.0, 1.0
    mean_a, mean_b = fmean(after), fmean(before)
    sample_a = sum((x - mean_a) ** 2 for x in after) / (n_a - 1)
    sample_b = sum((x - mean_b) ** 2 for x in before) / (n_b - 1)
    if floor_after_variance:
        sample_a = max(sample_a, sample_b)
    var_a, var_b = sample_a / n_a, sample_b / n_b
    spread = var_a + var_b
    if spread <= 0.0:
        return (math.inf if mean_a > mean_b else 0.0), float(n_a + n_b - 2)
    df = spread**2 / ((var_a**2 / (n_a - 1) if n_a > 1 else 0.0) + (var_b**2 / (n_b - 1) if n_b > 1 else 0.0))
    return (mean_a - mean_b) / math.sqrt(spread), max(1.0, df)


def one_sample_t(values: Sequence[float]) -> tuple[float, float]:
    """(t, degrees of freedom) of the test that `values`' mean exceeds 0."""
    n = len(values)
    if n < 2:
        return 0.0, 1.0
    mean = fmean(values)
    variance = sum((x - mean) ** 2 for x in values) / (n - 1)
    if variance <= 0.0:
        return (math.inf if mean > 0 else 0.0), float(n - 1)
    return mean / math.sqrt(variance / n), float(n - 1)


def t_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (one-sided p-value)."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, epsilon = 1e-300, 3e-14
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < epsilon:
            break
    return result
