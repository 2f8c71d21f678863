"""What the predictions of each variant say: scores with intervals, paired comparisons, examples.

Turns the `Variant`s of one evaluation into the ``variants``, ``comparisons``, ``flipped`` and
``worst`` parts of metrics.json (see :mod:`tuneforge.eval.run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneforge.eval import baselines as bl
from tuneforge.eval.inputs import Plan
from tuneforge.eval.runner import Variant


def correctness(plan: Plan, pred: Sequence[str]) -> np.ndarray:
    """Per example, right or wrong: the label (classification) or an exact match (generation)."""
    from tuneforge.eval.metrics import exact_match_scores

    if plan.run.labels is not None:
        return np.array([p == g for p, g in zip(pred, plan.gold, strict=True)], dtype=bool)
    return np.array(exact_match_scores(plan.gold, list(pred)), dtype=float) > 0.5


def _ci(values: Sequence[float]) -> list[float]:
    from tuneforge.eval.stats import bootstrap_ci

    lo, hi = bootstrap_ci(np.asarray(values, dtype=float))
    return [lo, hi]


def summarize(plan: Plan, variant: Variant) -> dict[str, Any]:
    """A variant's entry of metrics.json ``variants``: its scores with 95 % bootstrap intervals,
    invalid-output rate, prompt length, output variation and time."""
    from tuneforge.eval import metrics

    common = {
        "prompt_tokens": variant.prompt_tokens,
        "output_variation": variant.variation,
        "seconds": round(variant.seconds, 3),
        "free_generation_seconds": (
            None if variant.free_seconds is None else round(variant.free_seconds, 3)
        ),
    }
    if plan.run.labels is not None:
        from tuneforge.eval.stats import macro_f1_ci

        labels = plan.run.labels
        scores = metrics.classification_metrics(plan.gold, variant.pred, labels)
        free = variant.free
        return {
            "accuracy": scores["accuracy"],
            "accuracy_ci": _ci(correctness(plan, variant.pred)),
            "macro_f1": scores["macro_f1"],
            "macro_f1_ci": list(macro_f1_ci(plan.gold, variant.pred, labels)),
            "per_class": scores["per_class"],
            "invalid_rate": (
                float(np.mean([text not in set(labels) for text in free])) if free else None
            ),
            "free_generation_exact_match": (
                float(np.mean([text == g for text, g in zip(free, plan.gold, strict=True)]))
                if free
                else None
            ),
            **common,
        }
    scores = metrics.generation_metrics(plan.gold, variant.pred)
    scores.pop("n", None)
    if scores.get("json"):
        from tuneforge.eval.stats import bootstrap_metric_ci

        def field_f1(golds: list[str], preds: list[str]) -> float:
            return metrics.json_field_scores(golds, preds)["field_f1"]

        scores["json"]["field_f1_ci"] = list(bootstrap_metric_ci(plan.gold, variant.pred, field_f1))
    return {
        **scores,
        "exact_match_ci": _ci(metrics.exact_match_scores(plan.gold, variant.pred)),
        "token_f1_ci": _ci(metrics.token_f1_scores(plan.gold, variant.pred)),
        "rouge_l_ci": _ci(metrics.rouge_l_scores(plan.gold, variant.pred)),
        "invalid_rate": None,
        "free_generation_exact_match": None,
        **common,
    }


def comparisons(plan: Plan, variants: dict[str, Variant], key: str) -> dict[str, Any]:
    """Tuned vs each baseline on the primary metric, paired (same examples).

    Classification: McNemar on per-example correctness + the paired bootstrap interval of the
    accuracy difference. Generation: the paired bootstrap interval of the difference in the
    primary metric (token F1, or micro JSON field F1); McNemar needs a right/wrong outcome, so
    it is given for exact match, under "exact_match_mcnemar", and not used for the verdict.
    Convention of tuneforge.eval.stats: a = baseline, b = tuned (positive = tuned better).
    """
    from tuneforge.eval.stats import mcnemar, paired_difference_ci

    tuned = variants["tuned"]
    out: dict[str, Any] = {}
    for name, variant in variants.items():
        if name == "tuned":
            continue
        entry: dict[str, Any] = {"metric": key}
        if plan.run.labels is not None:
            a, b = correctness(plan, variant.pred), correctness(plan, tuned.pred)
            entry["mcnemar"] = mcnemar(a, b)
            diff, lo, hi = paired_difference_ci(a, b)
        else:
            entry["mcnemar"] = None
            entry["exact_match_mcnemar"] = mcnemar(
                correctness(plan, variant.pred), correctness(plan, tuned.pred)
            )
            if key == "field_f1":
                diff, lo, hi = _field_f1_difference(plan.gold, variant.pred, tuned.pred)
            else:
                diff, lo, hi = paired_difference_ci(
                    _scores(plan, variant.pred, key), _scores(plan, tuned.pred, key)
                )
        entry["difference"] = {"diff": diff, "lo": lo, "hi": hi}
        out[name] = entry
    return out


def _field_f1_difference(
    gold: list[str], baseline: list[str], tuned: list[str]
) -> tuple[float, float, float]:
    """(diff, lo, hi) of micro JSON field F1, tuned - baseline, by a paired bootstrap of examples."""
    from tuneforge.eval.metrics import json_field_scores
    from tuneforge.eval.stats import bootstrap_metric_ci

    def delta(rows: list[int], _: list[int]) -> float:
        golds = [gold[i] for i in rows]
        ours = json_field_scores(golds, [tuned[i] for i in rows])["field_f1"]
        theirs = json_field_scores(golds, [baseline[i] for i in rows])["field_f1"]
        return ours - theirs

    rows = list(range(len(gold)))
    lo, hi = bootstrap_metric_ci(rows, rows, delta)
    return delta(rows, rows), lo, hi


def _scores(plan: Plan, pred: Sequence[str], key: str) -> np.ndarray:
    from tuneforge.eval import metrics

    per_example = {
        "exact_match": metrics.exact_match_scores,
        "token_f1": metrics.token_f1_scores,
        "rouge_l": metrics.rouge_l_scores,
    }
    if key == "accuracy":
        return correctness(plan, pred).astype(float)
    return np.asarray(per_example[key](plan.gold, list(pred)), dtype=float)


def examples(
    plan: Plan, indices: Sequence[int], tuned: Variant, other: Variant | None
) -> list[dict[str, Any]]:
    """The report's rows for `indices`: input text, gold, tuned's answer (and `other`'s)."""
    return [
        {
            "index": int(i),
            "text": bl.example_text(plan.rows[i]),
            "gold": plan.gold[i],
            "pred": tuned.pred[i],
            "other_pred": other.pred[i] if other is not None else None,
            "confidence": tuned.confidence[i],
        }
        for i in indices
    ]


def compared_strings(plan: Plan, pred: Sequence[str]) -> list[str]:
    """Answers as compared for right/wrong: labels as they are, free text normalized."""
    from tuneforge.eval.metrics import normalize_text

    return list(pred) if plan.run.labels is not None else [normalize_text(p) for p in pred]
