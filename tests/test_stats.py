"""datafree.stats: the summary of a few seeds and Welch's t-test, checked against known answers
and against the Welch–Satterthwaite formula written out here."""
from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from datafree.stats import format_p, summarize, welch_p


def test_summary_of_one_two_three():
    s = summarize([1, 2, 3])
    assert s.n == 3 and s.mean == pytest.approx(2) and s.std == pytest.approx(1)
    # 2 ± t(0.975, df=2) · 1/√3 = 2 ± 4.302653 / 1.732051 = 2 ± 2.484138
    assert s.low == pytest.approx(2 - 2.4841, abs=1e-3) and s.high == pytest.approx(2 + 2.4841, abs=1e-3)
    assert s.has_interval


def test_summary_of_one_value_has_no_interval():
    s = summarize([93.5])
    assert (s.n, s.mean, s.std) == (1, 93.5, 0.0)
    assert s.low is None and s.high is None and not s.has_interval


def test_summary_of_nothing_and_of_identical_values():
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean) and not empty.has_interval
    same = summarize([90.0, 90.0, 90.0])
    assert same.std == 0 and (same.low, same.high) == (90.0, 90.0)


def test_sample_standard_deviation_uses_n_minus_one():
    s = summarize([90.0, 92.0])
    assert s.std == pytest.approx(math.sqrt(2))  # ((1² + 1²) / (2 − 1)) ** 0.5
    # 91 ± t(0.975, 1) · √2 / √2 = 91 ± 12.7062
    assert s.high - s.mean == pytest.approx(12.7062, abs=1e-3)


def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's t and the Welch–Satterthwaite degrees of freedom, then the two-sided tail."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return 2 * sps.t.sf(abs(t), df)


def test_welch_p_matches_the_welch_satterthwaite_formula():
    a, b = [91.2, 92.8, 90.5], [88.0, 85.5, 89.9, 87.1]
    p = welch_p(a, b)
    assert p == pytest.approx(welch_by_hand(a, b), rel=1e-9)
    assert 0 < p < 0.05  # a clear difference of ~3.7 points with spreads of ~1–2
    assert welch_p(b, a) == pytest.approx(p)  # two-sided
    # A known value: t = −1/√(2/3) = −1.2247, df = 4 → p = 0.2879.
    assert welch_p([1, 2, 3], [2, 3, 4]) == pytest.approx(0.2879, abs=1e-4)


def test_welch_p_is_none_when_undefined():
    assert welch_p([90.0], [80.0, 81.0]) is None  # one seed: no variance to test with
    assert welch_p([80.0, 81.0], []) is None
    assert welch_p([90.0, 90.0, 90.0], [90.0, 90.0, 90.0]) is None  # constant and equal: 0 / 0


def test_format_p():
    assert format_p(0.0312) == "p = 0.031"
    assert format_p(0.0004) == "p < 0.001"
    assert format_p(None) == "—"
