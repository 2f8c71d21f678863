"""Bootstrap intervals and McNemar against hand computations."""

from math import comb

import numpy as np
import pytest
from scipy import stats as sps

from tuneforge.eval.metrics import macro_f1
from tuneforge.eval.stats import (
    bootstrap_ci,
    bootstrap_metric_ci,
    macro_f1_ci,
    mcnemar,
    paired_difference_ci,
)


def _correct(n: int, acc: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < acc


def test_bootstrap_ci_contains_estimate_deterministic_and_narrows():
    small = _correct(100, 0.7, 1).astype(float)
    big = _correct(2000, 0.7, 1).astype(float)
    lo, hi = bootstrap_ci(small)
    assert lo <= small.mean() <= hi
    assert bootstrap_ci(small, seed=0) == (lo, hi)
    assert bootstrap_ci(small, seed=1) != (lo, hi)
    lo_b, hi_b = bootstrap_ci(big)
    assert lo_b <= big.mean() <= hi_b
    assert hi_b - lo_b < (hi - lo) / 2  # ~sqrt(20) narrower
    # close to the normal-approximation interval for a proportion
    se = np.sqrt(big.mean() * (1 - big.mean()) / big.size)
    assert hi_b - lo_b == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(small, confidence=0.5)[1] - bootstrap_ci(small, confidence=0.5)[0] < (
        hi - lo
    )


def test_bootstrap_ci_other_statistics_and_edges():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    lo, hi = bootstrap_ci(values, statistic=np.median)
    assert 1.0 <= lo <= 3.0 <= hi <= 100.0
    # a statistic without an axis argument is applied per resample
    assert bootstrap_ci(values, statistic=lambda x: float(max(x)))[1] == 100.0
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_macro_f1_ci_matches_generic_bootstrap():
    rng = np.random.default_rng(0)
    labels = [f"c{i}" for i in range(6)]
    gold = [labels[i] for i in rng.integers(0, 6, 150)]
    pred = [g if rng.random() < 0.6 else labels[rng.integers(0, 6)] for g in gold]
    pred[:3] = ["nonsense"] * 3
    fast = macro_f1_ci(gold, pred, labels, n_resamples=200, seed=4)
    slow = bootstrap_metric_ci(
        gold, pred, lambda g, p: macro_f1(g, p, labels), n_resamples=200, seed=4
    )
    assert fast == pytest.approx(slow)
    assert fast[0] <= macro_f1(gold, pred, labels) <= fast[1]


def test_mcnemar_exact_matches_hand_binomial():
    # 3 pairs a-only, 9 pairs b-only (12 discordant < 25 -> exact), 20 concordant
    a = [True] * 3 + [False] * 9 + [True] * 10 + [False] * 10
    b = [False] * 3 + [True] * 9 + [True] * 10 + [False] * 10
    res = mcnemar(a, b)
    assert res["a_only"] == 3 and res["b_only"] == 9
    assert res["method"] == "exact"
    tail = sum(comb(12, k) for k in range(4)) / 2**12  # P(X <= 3), X ~ Bin(12, 1/2)
    assert res["p_value"] == pytest.approx(2 * tail)  # symmetric: two-sided = 2 * one tail
    assert res["p_value"] == pytest.approx(0.146, abs=1e-3)


def test_mcnemar_chi2_branch_and_no_discordance():
    a = [True] * 10 + [False] * 30 + [True] * 50
    b = [False] * 10 + [True] * 30 + [True] * 50
    res = mcnemar(a, b)
    assert res["method"] == "chi2"
    chi2 = (abs(10 - 30) - 1) ** 2 / 40
    assert res["statistic"] == pytest.approx(chi2)
    assert res["p_value"] == pytest.approx(sps.chi2.sf(chi2, 1))
    assert res["p_value"] < 0.01
    same = mcnemar([True, False, True], [True, False, True])
    assert same["p_value"] == 1.0 and same["a_only"] == same["b_only"] == 0
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_paired_difference_ci():
    a = _correct(500, 0.6, 2)
    b = a.copy()
    b[np.flatnonzero(~a)[:50]] = True  # b fixes 50 of a's errors and breaks none
    diff, lo, hi = paired_difference_ci(a, b)
    assert diff == pytest.approx(50 / 500)
    assert 0 < lo <= diff <= hi
    # paired: much narrower than the two marginal intervals combined
    lo_a, hi_a = bootstrap_ci(a.astype(float))
    assert hi - lo < (hi_a - lo_a)
    same = paired_difference_ci(a, a)
    assert same == (0.0, 0.0, 0.0)
