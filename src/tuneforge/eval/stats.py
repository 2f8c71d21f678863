"""Uncertainty for evaluation numbers: bootstrap intervals and McNemar's paired test.

A test set of a few hundred examples gives accuracies that move by several points from one
sample to the next, so "tuned 0.84 vs few-shot 0.81" means nothing without an interval. The
bootstrap resamples *examples* (the unit that was sampled), and because every variant is scored
on the same examples, comparisons use paired tests (McNemar, paired bootstrap of the difference),
which are far more sensitive than comparing two independent intervals.

All resampling is seeded (``numpy.random.default_rng(seed)``) so a report is reproducible, and
every function here draws its resample indices from the same stream: for one seed,
:func:`bootstrap_ci`, :func:`bootstrap_metric_ci` and :func:`macro_f1_ci` use identical resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_ci",
    "bootstrap_metric_ci",
    "macro_f1_ci",
    "mcnemar",
    "paired_difference_ci",
]

_CHUNK_CELLS = 2_000_000  # resample indices held in memory at once (16 MB of int64)
EXACT_BELOW = 25  # discordant pairs under which McNemar uses the exact binomial test


def _resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (rows, n) blocks of bootstrap indices; the concatenation is one rng stream."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // max(n, 1))
    done = 0
    while done < n_resamples:
        take = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(take, n))
        done += take


def _interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1 - confidence
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(values)``, resampling examples.

    ``values`` are per-example scores (1/0 correctness for accuracy, token F1 per answer, ...).
    ``statistic`` is called as ``statistic(block, axis=1)`` on a block of resamples when it
    accepts ``axis`` (numpy reductions do, and that is fast), else once per resample. Returns
    ``(lo, hi)``; a single value gives a zero-width interval; an empty input is an error because
    no interval exists.
    """
    data = np.asarray(values, dtype=float)
    if data.ndim != 1:
        raise ValueError("values must be one-dimensional")
    if data.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    out: list[np.ndarray] = []
    for idx in _resample_indices(data.size, n_resamples, seed):
        block = data[idx]
        try:
            stats = np.asarray(statistic(block, axis=1), dtype=float)
            if stats.shape != (block.shape[0],):
                raise TypeError
        except TypeError:
            stats = np.array([float(statistic(row)) for row in block])
        out.append(stats)
    return _interval(np.concatenate(out), confidence)


def bootstrap_metric_ci(
    gold: Sequence[Any],
    pred: Sequence[Any],
    metric_fn: Callable[[list[Any], list[Any]], float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for a metric that is not a mean of per-example scores.

    Macro-F1, field-level micro F1 and the like must be recomputed on each resample of
    (gold, pred) pairs: ``metric_fn(gold_sample, pred_sample) -> float``. It is called
    ``n_resamples`` times, so pass a fast function; for macro-F1 use :func:`macro_f1_ci`, which
    gives the same interval (same seed, same resamples) about 100× faster.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    if not gold:
        raise ValueError("cannot bootstrap an empty sample")
    gold, pred = list(gold), list(pred)
    stats = [
        float(metric_fn([gold[i] for i in row], [pred[i] for i in row]))
        for idx in _resample_indices(len(gold), n_resamples, seed)
        for row in idx
    ]
    return _interval(np.asarray(stats), confidence)


def macro_f1_ci(
    gold: Sequence[str],
    pred: Sequence[str],
    labels: Sequence[str],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of macro-F1, vectorised.

    Same definition as :func:`tuneforge.eval.metrics.classification_metrics` (average over the
    labels present in the resample's gold or pred; predictions outside ``labels`` are wrong and
    count for no class) and same resamples as :func:`bootstrap_metric_ci` for a seed. Per class,
    ``F1 = 2·TP / (support + predicted)``, computed for all resamples at once with one matrix
    product, so 2,000 resamples of 3,000 examples over 77 classes take well under a second.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    n = len(gold)
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    index = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    n_labels = len(index)
    if n_labels == 0:
        raise ValueError("labels is empty")
    g = np.array([index.get(x, -1) for x in gold])
    p = np.array([index.get(x, -1) for x in pred])
    one_hot = np.zeros((n, 3 * n_labels))  # [gold | pred | true positive] indicator columns
    rows = np.arange(n)
    one_hot[rows[g >= 0], g[g >= 0]] = 1
    one_hot[rows[p >= 0], n_labels + p[p >= 0]] = 1
    hit = (g == p) & (g >= 0)
    one_hot[rows[hit], 2 * n_labels + g[hit]] = 1
    out = []
    for idx in _resample_indices(n, n_resamples, seed):
        k = idx.shape[0]
        weights = np.bincount((idx + (np.arange(k) * n)[:, None]).ravel(), minlength=k * n).reshape(
            k, n
        )
        counts = weights @ one_hot
        support, predicted, tp = np.split(counts, 3, axis=1)
        present = (support + predicted) > 0
        f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=present)
        out.append(f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1))
    return _interval(np.concatenate(out), confidence)


def _as_bool_pair(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[np.ndarray, ...]:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"correct_a and correct_b must be 1-D of equal length ({a.shape} vs {b.shape})"
        )
    return a, b


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test: do two models, scored on the same examples, differ in accuracy?

    Only discordant examples carry information: ``a_only`` (a right, b wrong) and ``b_only``
    (a wrong, b right). Under H0 each discordant example is a fair coin. With fewer than 25
    discordant pairs the exact two-sided binomial test is used (``scipy.stats.binomtest``; the
    chi-square approximation is poor there), otherwise the chi-square statistic with continuity
    correction ``(|a_only − b_only| − 1)² / (a_only + b_only)`` on 1 degree of freedom. No
    discordant pairs: the models agree everywhere and ``p_value`` is 1.0.

    Returns ``{"a_only", "b_only", "p_value", "method": "exact"|"chi2", "statistic", "n"}``;
    ``statistic`` is the chi-square value, or ``None`` for the exact test.
    """
    from scipy import stats

    a, b = _as_bool_pair(correct_a, correct_b)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    discordant = a_only + b_only
    result: dict[str, Any] = {"a_only": a_only, "b_only": b_only, "n": int(a.size)}
    if discordant == 0:
        return {**result, "p_value": 1.0, "method": "exact", "statistic": None}
    if discordant < EXACT_BELOW:
        p = stats.binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue
        return {**result, "p_value": float(min(1.0, p)), "method": "exact", "statistic": None}
    chi2 = (abs(a_only - b_only) - 1) ** 2 / discordant
    p = stats.chi2.sf(chi2, df=1)
    return {**result, "p_value": float(p), "method": "chi2", "statistic": float(chi2)}


def paired_difference_ci(
    correct_a: Sequence[bool] | Sequence[float],
    correct_b: Sequence[bool] | Sequence[float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(diff, lo, hi)``: accuracy(b) − accuracy(a) with a paired percentile bootstrap interval.

    Resampling examples (not each model separately) keeps the pairing, so the interval reflects
    how much the *difference* varies — much narrower than two separate accuracy intervals when
    the models agree on most examples. Per-example scores in [0, 1] (e.g. token F1) work too.
    Convention used by tuneforge reports: ``a`` = baseline, ``b`` = tuned, so a positive
    difference means the fine-tune is better.
    """
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"correct_a and correct_b must be 1-D of equal length ({a.shape} vs {b.shape})"
        )
    d = b - a
    lo, hi = bootstrap_ci(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return float(d.mean()), lo, hi
