"""Deciding what the evaluation numbers say: the primary metric, and the verdict on it.

``verdict`` answers "did fine-tuning help?" in one or two sentences from the ``results`` dict
(the metrics.json structure produced by ``tuneforge eval``), on paired statistics. The number
formatting and metric accessors here are shared with the report (:mod:`tuneforge.eval.report`),
so the tables and the verdict sentence show the same digits.

Conventions of ``results`` this module relies on: ``comparisons[baseline]`` holds
``mcnemar(correct_baseline, correct_tuned)`` (so ``a_only`` = baseline-only right, ``b_only`` =
tuned-only right) and ``difference`` = ``paired_difference_ci(correct_baseline, correct_tuned)``
(so ``diff`` = tuned − baseline, in the metric's own units, a proportion).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALPHA",
    "FORGETTING_POINTS",
    "METRIC_NAMES",
    "VARIANT_ORDER",
    "as_interval",
    "as_number",
    "ci_text",
    "forgetting_drop",
    "forgetting_test",
    "metric_value",
    "ordered_variants",
    "p_value_text",
    "pct",
    "primary_metric",
    "pts",
    "signed_pts",
    "strongest_baseline",
    "verdict",
]

ALPHA = 0.05  # significance level used by the verdict
FORGETTING_POINTS = 5.0  # a drop this large on the general-knowledge set is flagged
INVALID_NOTE = 0.02  # tuned invalid-output rate above which the verdict mentions it
VARIANT_ORDER = ("tuned", "base_zero", "base_fewshot", "base_rag", "classic")


# --------------------------------------------------------------------------- numbers


def as_number(value: Any) -> float | None:
    """``value`` as a float; None for a missing, boolean, non-numeric or NaN value."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def pct(value: Any) -> str:
    """A proportion as a percentage, "–" when missing: 0.314 → "31.4 %"."""
    v = as_number(value)
    return "–" if v is None else f"{100 * v:.1f} %"


def pts(value: float) -> str:
    """A proportion as percentage points, with a real minus sign: 0.31 → "31.0"."""
    return f"{100 * value:.1f}".replace("-", "−")


def signed_pts(value: float) -> str:
    """Like :func:`pts`, always signed: 0.02 → "+2.0"."""
    return f"{100 * value:+.1f}".replace("-", "−")


def p_value_text(p: float) -> str:
    """ "p = 0.031", or "p < 0.001"."""
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2g}"
    return f"p = {text if '.' in text or 'e' in text else text + '.0'}"


def as_interval(ci: Any) -> tuple[float, float] | None:
    """``(lo, hi)`` from ``{"lo", "hi"}`` or a pair; None when either end is missing."""
    if isinstance(ci, Mapping):
        lo, hi = as_number(ci.get("lo")), as_number(ci.get("hi"))
    elif isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = as_number(ci[0]), as_number(ci[1])
    else:
        return None
    return None if lo is None or hi is None else (lo, hi)


def ci_text(ci: tuple[float, float] | None, points: bool = False) -> str:
    """An interval of proportions as "lo–hi" in percent ("" for none)."""
    if ci is None:
        return ""
    f = pts if points else (lambda v: f"{100 * v:.1f}")
    return f"{f(ci[0])}–{f(ci[1])}"


# --------------------------------------------------------------------------- metric access


METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "exact_match": "exact match",
    "token_f1": "token F1",
    "rouge_l": "ROUGE-L",
    "field_f1": "JSON field F1",
}


def primary_metric(results: Mapping[str, Any]) -> tuple[str, str]:
    """``(key, display name)`` of the metric the verdict is decided on.

    If every entry of ``comparisons`` names the metric its paired test was computed on
    (``"metric"``), that metric is used, so the score, the difference and the p-value in the
    verdict all describe the same thing. Otherwise: accuracy for classification; for generation,
    JSON field F1 when the task produces JSON objects (some variant carries a ``json`` block),
    since fields are what an extraction user consumes, else token F1, which gives partial credit
    that exact match does not.
    """
    named = {
        c.get("metric")
        for c in (results.get("comparisons") or {}).values()
        if isinstance(c, Mapping)
    }
    if len(named) == 1 and (key := next(iter(named))) in METRIC_NAMES:
        return key, METRIC_NAMES[key]
    if results.get("task") != "generation":
        return "accuracy", "accuracy"
    variants = results.get("variants") or {}
    if any(isinstance(v, Mapping) and v.get("json") for v in variants.values()):
        return "field_f1", "JSON field F1"
    return "token_f1", "token F1"


def metric_value(variant: Mapping[str, Any] | None, key: str) -> tuple[float | None, Any]:
    """(value, ci) of ``key`` in a variant; JSON scores live under ``variant["json"]``."""
    if not isinstance(variant, Mapping):
        return None, None
    if key in {"field_f1", "field_precision", "field_recall", "valid_rate"}:
        block = variant.get("json") or {}
        return as_number(block.get(key)), as_interval(block.get(f"{key}_ci"))
    return as_number(variant.get(key)), as_interval(variant.get(f"{key}_ci"))


def ordered_variants(variants: Mapping[str, Any]) -> list[str]:
    """Variant names in report order: :data:`VARIANT_ORDER`, then any others sorted."""
    known = [k for k in VARIANT_ORDER if k in variants]
    return known + sorted(k for k in variants if k not in VARIANT_ORDER)


def strongest_baseline(results: Mapping[str, Any], key: str) -> str | None:
    """The baseline (any variant but ``tuned``) scoring highest on ``key``; None if none."""
    variants = results.get("variants") or {}
    scored = [
        (value, name == "classic", name)
        for name in ordered_variants(variants)
        if name != "tuned" and (value := metric_value(variants[name], key)[0]) is not None
    ]
    # Highest score; on a tie prefer classic (cheapest), then the earlier variant.
    return max(scored, key=lambda s: (s[0], s[1]))[2] if scored else None


# --------------------------------------------------------------------------- verdict


@dataclass
class _Comparison:
    diff: float
    ci: tuple[float, float] | None
    p: float | None
    significant: bool | None  # None: no test and no interval to decide with

    def evidence(self) -> str:
        parts = []
        if self.ci is not None:
            parts.append(f"95 % CI {ci_text(self.ci, points=True)}")
        if self.p is not None:
            parts.append(f"McNemar {p_value_text(self.p)}")
        return ", ".join(parts)


def _compare(results: Mapping[str, Any], baseline: str, key: str) -> _Comparison:
    variants = results["variants"]
    tuned_value, tuned_ci = metric_value(variants["tuned"], key)
    base_value, base_ci = metric_value(variants[baseline], key)
    assert tuned_value is not None and base_value is not None
    comp = (results.get("comparisons") or {}).get(baseline) or {}
    difference = comp.get("difference") or {}
    diff = as_number(difference.get("diff"))
    diff = tuned_value - base_value if diff is None else diff
    ci = as_interval(difference)
    p = as_number((comp.get("mcnemar") or {}).get("p_value"))
    if p is not None:
        significant: bool | None = p < ALPHA
    elif ci is not None:
        significant = ci[0] > 0 or ci[1] < 0
    elif tuned_ci is not None and base_ci is not None:
        # No paired analysis: non-overlapping marginal intervals (conservative).
        significant = tuned_ci[0] > base_ci[1] or tuned_ci[1] < base_ci[0]
    else:
        significant = None
    return _Comparison(diff=diff, ci=ci, p=p, significant=significant)


def _prompt_phrase(results: Mapping[str, Any], baseline: str) -> str:
    variants = results["variants"]
    tuned = as_number(variants["tuned"].get("prompt_tokens"))
    base = as_number(variants[baseline].get("prompt_tokens"))
    if not tuned or not base or baseline == "classic":
        return ""
    ratio = base / tuned
    if ratio >= 1.1:
        return f" with a prompt {ratio:.1f}× shorter"
    if ratio <= 1 / 1.1:
        return f" with a prompt {1 / ratio:.1f}× longer"
    return " with a prompt of about the same length"


def _notes(results: Mapping[str, Any]) -> str:
    notes = []
    tuned = (results.get("variants") or {}).get("tuned") or {}
    invalid = as_number(tuned.get("invalid_rate"))
    if invalid is not None and invalid > INVALID_NOTE:
        notes.append(f"Note: {pct(invalid)} of the tuned model's outputs are invalid.")
    drop = forgetting_drop(results)
    if drop is not None and drop >= FORGETTING_POINTS:
        test = forgetting_test(results)
        evidence = f" ({p_value_text(test['p_value'])})" if test is not None else ""
        notes.append(
            f"Warning: the tuned model lost {drop:.1f} points on the general-knowledge set"
            f"{evidence} (forgetting); lower the learning rate or epochs, or use a smaller "
            "adapter, if the model must stay general."
        )
    return (" " + " ".join(notes)) if notes else ""


def verdict(results: dict[str, Any]) -> str:
    """One or two sentences answering "did fine-tuning help?", decided on paired statistics.

    The tuned model is compared with the strongest baseline by the primary metric (see
    :func:`primary_metric`). The difference counts as real when McNemar's p < 0.05 (or, without
    a test, when the paired 95 % interval excludes 0). Outcomes:

    - tuned significantly better → "tuned beats X by … ; fine-tuning is worth it here";
    - the best baseline is the embedding classifier and tuned leads within noise → "tuned leads
      … but within noise … worth its cost only if a larger test set confirms the lead";
    - the embedding classifier scores as high or higher → "the embedding classifier (classic)
      matches or beats the fine-tune … not worth its cost";
    - another baseline significantly better → "X beats tuned … not worth it here";
    - otherwise → "inconclusive: difference within noise (p = …)".

    Missing ``tuned`` or missing baselines give a sentence saying what to run next. Invalid
    outputs above 2 % and a forgetting drop of 5+ points are appended as notes.
    """
    variants = results.get("variants") or {}
    key, name = primary_metric(results)
    tuned_value, tuned_ci = metric_value(variants.get("tuned"), key)
    best = strongest_baseline(results, key)
    if tuned_value is None and best is None:
        return "nothing to compare: no variant has a score for " + name + "."
    if tuned_value is None:
        best_value, _ = metric_value(variants[best], key)
        return (
            f"no fine-tuned model was evaluated: the strongest baseline is {best} "
            f"({name} {pct(best_value)}); train a model and evaluate it against the same test "
            "set to learn whether fine-tuning helps."
        )
    if best is None:
        ci = f" (95 % CI {ci_text(tuned_ci)})" if tuned_ci else ""
        return (
            f"only the fine-tune was evaluated: {name} {pct(tuned_value)}{ci}; with no "
            "baseline there is no telling whether fine-tuning helped — evaluate with baselines "
            "(zero-shot, few-shot, classic)." + _notes(results)
        )
    best_value, _ = metric_value(variants[best], key)
    comp = _compare(results, best, key)
    evidence = comp.evidence()
    evidence_paren = f" ({evidence})" if evidence else ""
    scores = f"{best} {pct(best_value)} vs tuned {pct(tuned_value)}"
    if comp.significant and comp.diff > 0:
        text = (
            f"tuned beats {best} by {pts(comp.diff)} points{evidence_paren}"
            f"{_prompt_phrase(results, best)}: {name} {pct(tuned_value)} vs "
            f"{pct(best_value)}; fine-tuning is worth it here."
        )
    elif comp.significant is None:
        text = (
            f"inconclusive: no paired test or interval is available ({scores}, {name}); "
            "re-run the evaluation with per-example predictions to decide."
        )
    elif best == "classic" and comp.diff > 0:
        text = (
            f"tuned leads the embedding classifier (classic) by {pts(comp.diff)} points, but "
            f"within noise{evidence_paren}: {scores} ({name}). On this evidence the classifier "
            "does as well and is far cheaper to train and to serve; fine-tuning is worth its "
            "cost only if a larger test set confirms the lead."
        )
    elif best == "classic":
        text = (
            f"the embedding classifier (classic) matches or beats the fine-tune: {scores} "
            f"({name}, difference {signed_pts(comp.diff)} points"
            f"{', ' + evidence if evidence else ''}); fine-tuning is not worth its cost here — "
            "the classifier is cheaper to train and to serve."
        )
    elif comp.significant and comp.diff < 0:
        text = (
            f"{best} beats tuned by {pts(-comp.diff)} points{evidence_paren}: {scores} ({name}); "
            f"fine-tuning is not worth it here — use {best}, or revisit the training data and "
            "recipe."
        )
    else:
        within = (
            f"{p_value_text(comp.p)}" if comp.p is not None else f"95 % CI {ci_text(comp.ci, True)}"
        )
        text = (
            f"inconclusive: difference within noise ({within}): {scores} ({name}, "
            f"{signed_pts(comp.diff)} points). A larger test set would narrow it; until then "
            f"the cheaper {best} does as well."
        )
    return text + _notes(results)


# --------------------------------------------------------------------------- forgetting


def forgetting_test(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """McNemar on the forgetting set from its lost/gained item lists, when present."""
    from tuneforge.eval.stats import mcnemar

    forgetting = results.get("forgetting") or {}
    lost, gained = forgetting.get("lost"), forgetting.get("gained")
    if not isinstance(lost, list) or not isinstance(gained, list):
        return None
    base_right = [True] * len(lost) + [False] * len(gained)
    return mcnemar(base_right, [not x for x in base_right])


def forgetting_drop(results: Mapping[str, Any]) -> float | None:
    """Points lost on the general-knowledge set, base − tuned (negative: gained)."""
    forgetting = results.get("forgetting") or {}
    base = as_number((forgetting.get("base") or {}).get("score"))
    tuned = as_number((forgetting.get("tuned") or {}).get("score"))
    if base is None or tuned is None:
        return None
    return 100 * (base - tuned)
