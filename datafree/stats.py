"""Statistics of a few seeds: the mean with its t-distribution confidence interval, and Welch's
t-test between two methods (scipy.stats).

A benchmark runs each method with a handful of seeds (often 3), so both figures are honest about
how little that is: with n = 3 the 95% interval of the mean is mean ± 2.48 standard deviations
(t(0.975, 2) / √3), and only a large difference between two methods gets a small p-value.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and confidence interval of the mean of `n` values."""
    n: int
    mean: float  # NaN when n = 0
    std: float  # sample standard deviation (ddof = 1); 0 for a single value, NaN for none
    low: float | None  # the confidence interval of the mean; None for n < 2
    high: float | None
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """The Summary of `values`: the interval is mean ± t((1 + confidence) / 2, n − 1) · std / √n."""
    from scipy import stats

    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, None, None, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, 0.0, None, None, confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    if std == 0:  # identical values: scipy wants a positive scale; the interval is the point itself
        return Summary(n, mean, 0.0, mean, mean, confidence)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(low), float(high), confidence)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) that `a` and `b` have the same
    mean; None when either side has fewer than two values or the test is undefined (NaN, e.g.
    both samples constant and equal)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():  # constant samples: scipy warns, then answers NaN (handled below)
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind([float(x) for x in a], [float(x) for x in b], equal_var=False).pvalue)
    return None if math.isnan(p) else p


def format_p(p: float | None) -> str:
    """`p = 0.031`, `p < 0.001`, or — when there is no p-value."""
    if p is None:
        return "—"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
