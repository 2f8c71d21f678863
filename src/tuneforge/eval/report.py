"""The evaluation report: a verdict a user can act on, and the evidence behind it.

``write_report`` writes three files into the run's eval directory: ``metrics.json`` (the
``results`` dict as given, for machines), ``report.md`` (for a terminal or a repository) and a
self-contained ``report.html`` (same content, figures embedded as base64 data URIs, no external
assets, so it can be mailed or attached to a ticket). Both documents are rendered from one list
of blocks, so they cannot drift apart.

``results`` is the metrics.json structure produced by ``tuneforge eval``; conventions this module
relies on: ``comparisons[baseline]`` holds ``mcnemar(correct_baseline, correct_tuned)`` (so
``a_only`` = baseline-only right, ``b_only`` = tuned-only right) and ``difference`` =
``paired_difference_ci(correct_baseline, correct_tuned)`` (so ``diff`` = tuned − baseline, in
the metric's own units, a proportion).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.fsutil import atomic_write_text

__all__ = ["ALPHA", "primary_metric", "render_html", "render_markdown", "verdict", "write_report"]

ALPHA = 0.05  # significance level used by the verdict
FORGETTING_POINTS = 5.0  # a drop this large on the general-knowledge set is flagged
INVALID_NOTE = 0.02  # tuned invalid-output rate above which the verdict mentions it
TEXT_WIDTH = 300  # characters of example text kept in tables
MAX_ROWS = 25  # examples listed per table
VARIANT_ORDER = ("tuned", "base_zero", "base_fewshot", "base_rag", "classic")
DESCRIPTIONS = {
    "tuned": "the fine-tuned model",
    "base_zero": "base model, zero-shot prompt",
    "base_fewshot": "base model, few-shot prompt",
    "base_rag": "base model, retrieved examples in the prompt",
    "classic": "embedding classifier (no LLM)",
}


# --------------------------------------------------------------------------- numbers


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _pct(value: Any) -> str:
    v = _num(value)
    return "–" if v is None else f"{100 * v:.1f} %"


def _pts(value: float) -> str:
    """A proportion as percentage points, with a real minus sign: 0.31 → "31.0"."""
    return f"{100 * value:.1f}".replace("-", "−")


def _signed_pts(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def _p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2g}"
    return f"p = {text if '.' in text or 'e' in text else text + '.0'}"


def _interval(ci: Any) -> tuple[float, float] | None:
    if isinstance(ci, Mapping):
        lo, hi = _num(ci.get("lo")), _num(ci.get("hi"))
    elif isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = _num(ci[0]), _num(ci[1])
    else:
        return None
    return None if lo is None or hi is None else (lo, hi)


def _ci_text(ci: tuple[float, float] | None, points: bool = False) -> str:
    if ci is None:
        return ""
    f = _pts if points else (lambda v: f"{100 * v:.1f}")
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


def _metric(variant: Mapping[str, Any] | None, key: str) -> tuple[float | None, Any]:
    """(value, ci) of ``key`` in a variant; JSON scores live under ``variant["json"]``."""
    if not isinstance(variant, Mapping):
        return None, None
    if key in {"field_f1", "field_precision", "field_recall", "valid_rate"}:
        block = variant.get("json") or {}
        return _num(block.get(key)), _interval(block.get(f"{key}_ci"))
    return _num(variant.get(key)), _interval(variant.get(f"{key}_ci"))


def _ordered(variants: Mapping[str, Any]) -> list[str]:
    known = [k for k in VARIANT_ORDER if k in variants]
    return known + sorted(k for k in variants if k not in VARIANT_ORDER)


def _strongest_baseline(results: Mapping[str, Any], key: str) -> str | None:
    variants = results.get("variants") or {}
    scored = [
        (value, name == "classic", name)
        for name in _ordered(variants)
        if name != "tuned" and (value := _metric(variants[name], key)[0]) is not None
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
            parts.append(f"95 % CI {_ci_text(self.ci, points=True)}")
        if self.p is not None:
            parts.append(f"McNemar {_p(self.p)}")
        return ", ".join(parts)


def _compare(results: Mapping[str, Any], baseline: str, key: str) -> _Comparison:
    variants = results["variants"]
    tuned_value, tuned_ci = _metric(variants["tuned"], key)
    base_value, base_ci = _metric(variants[baseline], key)
    assert tuned_value is not None and base_value is not None
    comp = (results.get("comparisons") or {}).get(baseline) or {}
    difference = comp.get("difference") or {}
    diff = _num(difference.get("diff"))
    diff = tuned_value - base_value if diff is None else diff
    ci = _interval(difference)
    p = _num((comp.get("mcnemar") or {}).get("p_value"))
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
    tuned = _num(variants["tuned"].get("prompt_tokens"))
    base = _num(variants[baseline].get("prompt_tokens"))
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
    invalid = _num(tuned.get("invalid_rate"))
    if invalid is not None and invalid > INVALID_NOTE:
        notes.append(f"Note: {_pct(invalid)} of the tuned model's outputs are invalid.")
    drop = _forgetting_drop(results)
    if drop is not None and drop >= FORGETTING_POINTS:
        test = _forgetting_test(results)
        evidence = f" ({_p(test['p_value'])})" if test is not None else ""
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
    tuned_value, tuned_ci = _metric(variants.get("tuned"), key)
    best = _strongest_baseline(results, key)
    if tuned_value is None and best is None:
        return "nothing to compare: no variant has a score for " + name + "."
    if tuned_value is None:
        best_value, _ = _metric(variants[best], key)
        return (
            f"no fine-tuned model was evaluated: the strongest baseline is {best} "
            f"({name} {_pct(best_value)}); train a model and evaluate it against the same test "
            "set to learn whether fine-tuning helps."
        )
    if best is None:
        ci = f" (95 % CI {_ci_text(tuned_ci)})" if tuned_ci else ""
        return (
            f"only the fine-tune was evaluated: {name} {_pct(tuned_value)}{ci}; with no "
            "baseline there is no telling whether fine-tuning helped — evaluate with baselines "
            "(zero-shot, few-shot, classic)." + _notes(results)
        )
    best_value, _ = _metric(variants[best], key)
    comp = _compare(results, best, key)
    evidence = comp.evidence()
    evidence_paren = f" ({evidence})" if evidence else ""
    scores = f"{best} {_pct(best_value)} vs tuned {_pct(tuned_value)}"
    if comp.significant and comp.diff > 0:
        text = (
            f"tuned beats {best} by {_pts(comp.diff)} points{evidence_paren}"
            f"{_prompt_phrase(results, best)}: {name} {_pct(tuned_value)} vs "
            f"{_pct(best_value)}; fine-tuning is worth it here."
        )
    elif comp.significant is None:
        text = (
            f"inconclusive: no paired test or interval is available ({scores}, {name}); "
            "re-run the evaluation with per-example predictions to decide."
        )
    elif best == "classic" and comp.diff > 0:
        text = (
            f"tuned leads the embedding classifier (classic) by {_pts(comp.diff)} points, but "
            f"within noise{evidence_paren}: {scores} ({name}). On this evidence the classifier "
            "does as well and is far cheaper to train and to serve; fine-tuning is worth its "
            "cost only if a larger test set confirms the lead."
        )
    elif best == "classic":
        text = (
            f"the embedding classifier (classic) matches or beats the fine-tune: {scores} "
            f"({name}, difference {_signed_pts(comp.diff)} points"
            f"{', ' + evidence if evidence else ''}); fine-tuning is not worth its cost here — "
            "the classifier is cheaper to train and to serve."
        )
    elif comp.significant and comp.diff < 0:
        text = (
            f"{best} beats tuned by {_pts(-comp.diff)} points{evidence_paren}: {scores} ({name}); "
            f"fine-tuning is not worth it here — use {best}, or revisit the training data and "
            "recipe."
        )
    else:
        within = f"{_p(comp.p)}" if comp.p is not None else f"95 % CI {_ci_text(comp.ci, True)}"
        text = (
            f"inconclusive: difference within noise ({within}): {scores} ({name}, "
            f"{_signed_pts(comp.diff)} points). A larger test set would narrow it; until then "
            f"the cheaper {best} does as well."
        )
    return text + _notes(results)


def _forgetting_test(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """McNemar on the forgetting set from its lost/gained item lists, when present."""
    from tuneforge.eval.stats import mcnemar

    forgetting = results.get("forgetting") or {}
    lost, gained = forgetting.get("lost"), forgetting.get("gained")
    if not isinstance(lost, list) or not isinstance(gained, list):
        return None
    base_right = [True] * len(lost) + [False] * len(gained)
    return mcnemar(base_right, [not x for x in base_right])


def _forgetting_drop(results: Mapping[str, Any]) -> float | None:
    forgetting = results.get("forgetting") or {}
    base = _num((forgetting.get("base") or {}).get("score"))
    tuned = _num((forgetting.get("tuned") or {}).get("score"))
    if base is None or tuned is None:
        return None
    return 100 * (base - tuned)


# --------------------------------------------------------------------------- document blocks


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)


Block = tuple[str, Any]


def _clip(text: Any, width: int = TEXT_WIDTH) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt_ci(variant: Mapping[str, Any], key: str) -> str | None:
    value, ci = _metric(variant, key)
    if value is None:
        return None
    return _pct(value) + (f" ({_ci_text(ci)})" if ci else "")


def _fmt_plain(value: Any, fmt: str = "{:.1f}") -> str | None:
    v = _num(value)
    return None if v is None else fmt.format(v)


def _variants_table(results: Mapping[str, Any], best: str | None) -> _Table:
    variants = results.get("variants") or {}
    generation = results.get("task") == "generation"
    if generation:
        columns: list[tuple[str, Any]] = [
            ("token F1 (95 % CI)", lambda v: _fmt_ci(v, "token_f1")),
            ("exact match", lambda v: _fmt_ci(v, "exact_match")),
            ("ROUGE-L", lambda v: _fmt_ci(v, "rouge_l")),
            ("JSON valid", lambda v: _fmt_ci(v, "valid_rate")),
            ("JSON field F1 (95 % CI)", lambda v: _fmt_ci(v, "field_f1")),
        ]
    else:
        columns = [
            ("accuracy (95 % CI)", lambda v: _fmt_ci(v, "accuracy")),
            ("macro-F1 (95 % CI)", lambda v: _fmt_ci(v, "macro_f1")),
            ("free-generation EM", lambda v: _fmt_ci(v, "free_generation_exact_match")),
        ]
    columns += [
        ("invalid outputs", lambda v: _fmt_ci(v, "invalid_rate")),
        ("prompt tokens (mean)", lambda v: _fmt_plain(v.get("prompt_tokens"), "{:.0f}")),
        ("output variation across seeds", lambda v: _fmt_ci(v, "output_variation")),
        ("seconds", lambda v: _fmt_plain(v.get("seconds"))),
    ]
    names = _ordered(variants)
    cells = {name: [get(variants[name] or {}) for _, get in columns] for name in names}
    keep = [i for i in range(len(columns)) if any(cells[n][i] is not None for n in names)]
    rows = []
    for name in names:
        label = name + (" (strongest baseline)" if name == best else "")
        rows.append([label, DESCRIPTIONS.get(name, "")] + [cells[name][i] or "–" for i in keep])
    headers = ["variant", "what", *[columns[i][0] for i in keep]]
    return _Table(headers, rows, set(range(2, len(headers))))


def _comparisons_table(results: Mapping[str, Any], key: str) -> _Table | None:
    comparisons = results.get("comparisons") or {}
    variants = results.get("variants") or {}
    if not comparisons:
        return None
    rows = []
    for name in _ordered(comparisons):
        comp = comparisons[name] or {}
        mc = comp.get("mcnemar") or {}
        diff = comp.get("difference") or {}
        d = _num(diff.get("diff"))
        ci = _interval(diff)
        p = _num(mc.get("p_value"))
        rows.append(
            [
                name,
                _pct(_metric(variants.get(name), key)[0]),
                "–" if d is None else _signed_pts(d),
                _ci_text(ci, points=True) or "–",
                str(mc.get("b_only", "–")),
                str(mc.get("a_only", "–")),
                "–" if p is None else _p(p).removeprefix("p ").removeprefix("= "),
                str(mc.get("method", "–")),
            ]
        )
    return _Table(
        [
            "baseline",
            "baseline score",
            "tuned − baseline (points)",
            "95 % CI",
            "only tuned right",
            "only baseline right",
            "McNemar p",
            "test",
        ],
        rows,
        {1, 2, 4, 5, 6},
    )


def _per_class_table(results: Mapping[str, Any], best: str | None) -> _Table | None:
    variants = results.get("variants") or {}
    per_class = (variants.get("tuned") or {}).get("per_class") or {}
    if not per_class:
        return None
    other = (variants.get(best) or {}).get("per_class") or {} if best else {}
    ranked = sorted(per_class.items(), key=lambda kv: (_num(kv[1].get("f1")) or 0.0, kv[0]))
    headers = ["label", "precision", "recall", "F1", "support"]
    if other:
        headers += [f"F1 {best}", "Δ F1"]
    rows = []
    for label, m in ranked:
        row = [
            label,
            _fmt_plain(m.get("precision"), "{:.3f}") or "–",
            _fmt_plain(m.get("recall"), "{:.3f}") or "–",
            _fmt_plain(m.get("f1"), "{:.3f}") or "–",
            str(m.get("support", "–")),
        ]
        if other:
            f_other = _num((other.get(label) or {}).get("f1"))
            f_tuned = _num(m.get("f1"))
            row += [
                "–" if f_other is None else f"{f_other:.3f}",
                "–"
                if f_other is None or f_tuned is None
                else f"{f_tuned - f_other:+.3f}".replace("-", "−"),
            ]
        rows.append(row)
    return _Table(headers, rows, set(range(1, len(headers))))


def _examples_table(examples: Iterable[Mapping[str, Any]], other: str | None) -> _Table:
    headers = ["#", "text", "gold", "tuned"] + ([other] if other else []) + ["confidence"]
    rows = []
    for e in list(examples)[:MAX_ROWS]:
        row = [str(e.get("index", "")), _clip(e.get("text")), _clip(e.get("gold"), 200)]
        row.append(_clip(e.get("pred"), 200))
        if other:
            row.append(_clip(e.get("other_pred"), 200))
        row.append(_fmt_plain(e.get("confidence"), "{:.3f}") or "–")
        rows.append(row)
    return _Table(headers, rows, {0, len(headers) - 1})


def _plot_blocks(plots: Mapping[str, Path], names: Iterable[str]) -> list[Block]:
    return [("img", (name, Path(plots[name]))) for name in names if name in plots]


def _blocks(results: Mapping[str, Any], plots: Mapping[str, Path]) -> list[Block]:
    key, metric_name = primary_metric(results)
    best = _strongest_baseline(results, key)
    variants = results.get("variants") or {}
    blocks: list[Block] = [("h1", f"Evaluation report: {results.get('run', '')}".strip())]
    blocks.append(("verdict", verdict(dict(results))))
    labels = results.get("labels")
    meta = [
        f"task: {results.get('task', '?')}",
        f"test examples: {results.get('n', '?')}",
        *([f"labels: {len(labels)}"] if labels else []),
        f"primary metric: {metric_name}",
    ]
    meta += [
        f"{name}: {results[name]}"
        for name in ("model", "method", "scoring", "shots", "data")
        if results.get(name) not in (None, "")
    ]
    blocks.append(("p", " · ".join(meta)))
    notes = results.get("notes") or []
    blocks += [("p", f"Note: {note}") for note in ([notes] if isinstance(notes, str) else notes)]

    blocks.append(("h2", "Variants"))
    if variants:
        blocks.append(("table", _variants_table(results, best)))
        blocks.append(
            (
                "p",
                "Intervals are 95 % percentile bootstraps over test examples. Invalid outputs: "
                "generations that are not one of the labels (classification) or not the expected "
                "format. Prompt tokens: mean tokens per prompt sent to the model. Output variation: "
                "share of examples whose output changed across sampling seeds.",
            )
        )
    else:
        blocks.append(("p", "No variant was evaluated."))
    comparison_plots = [k for k in plots if "comparison" in k or "bar" in k]
    blocks += _plot_blocks(plots, comparison_plots)

    table = _comparisons_table(results, key)
    if table is not None:
        blocks.append(("h2", "Tuned vs each baseline (paired, same test examples)"))
        blocks.append(("table", table))
        blocks.append(
            (
                "p",
                "McNemar's test uses only the examples where exactly one of the two is right "
                "(exact binomial test under 25 such examples, chi-square with continuity "
                "correction above). The interval is a paired bootstrap of the difference.",
            )
        )

    table = _per_class_table(results, best)
    if table is not None:
        blocks.append(("h2", "Per class (tuned), worst first"))
        blocks.append(("table", table))
    other_plots = [k for k in plots if k not in comparison_plots]
    if other_plots:
        blocks.append(("h2", "Figures"))
        blocks += _plot_blocks(plots, other_plots)

    confusions = results.get("confusions") or []
    if confusions:
        blocks.append(("h2", "Top confusions (tuned)"))
        rows = [
            [
                str(c.get("gold")),
                str(c.get("pred")),
                str(c.get("count")),
                _pct(c.get("share_of_gold")),
            ]
            for c in confusions
        ]
        blocks.append(
            ("table", _Table(["gold", "predicted", "count", "share of gold"], rows, {2, 3}))
        )

    flips = results.get("flipped") or {}
    if flips:
        vs = flips.get("vs") or "baseline"
        fixed, broken = flips.get("fixed") or [], flips.get("broken") or []
        blocks.append(("h2", f"Flipped examples: tuned vs {vs}"))
        blocks.append(
            (
                "p",
                f"{len(fixed)} fixed ({vs} wrong, tuned right) and {len(broken)} broken "
                f"({vs} right, tuned wrong); up to {MAX_ROWS} of each are listed.",
            )
        )
        blocks.append(("h3", f"Fixed by fine-tuning ({len(fixed)})"))
        blocks.append(("table", _examples_table(fixed, vs)) if fixed else ("p", "None."))
        blocks.append(("h3", f"Broken by fine-tuning ({len(broken)})"))
        blocks.append(("table", _examples_table(broken, vs)) if broken else ("p", "None."))

    worst = results.get("worst") or []
    if worst:
        blocks.append(("h2", "Most confident mistakes (tuned)"))
        blocks.append(
            ("p", "Wrong answers the model was surest of: often label noise or ambiguous classes.")
        )
        blocks.append(("table", _examples_table(worst, None)))

    perplexity = results.get("perplexity")
    if perplexity:
        blocks.append(("h2", "Perplexity (tuned, test set)"))
        rows = [[k, _fmt_plain(v, "{:.3f}") or "–"] for k, v in perplexity.items()]
        blocks.append(("table", _Table(["over", "perplexity"], rows, {1})))
        blocks.append(
            (
                "p",
                "answer: over the answer tokens only; sequence: over the whole formatted "
                "example. Lower is better.",
            )
        )

    forgetting = results.get("forgetting")
    if forgetting:
        blocks.append(("h2", "Forgetting check (general-knowledge set)"))
        rows = [
            [
                name,
                _pct((forgetting.get(name) or {}).get("score")),
                str((forgetting.get(name) or {}).get("n", "–")),
            ]
            for name in ("base", "tuned")
            if forgetting.get(name)
        ]
        blocks.append(("table", _Table(["model", "score", "n"], rows, {1, 2})))
        drop = _forgetting_drop(results)
        if drop is not None:
            if drop >= FORGETTING_POINTS:
                text = f"The tuned model lost {drop:.1f} points: it forgot some general ability."
            elif drop > 0:
                text = f"The tuned model lost {drop:.1f} points, less than the {FORGETTING_POINTS:.0f} points flagged as forgetting."
            else:
                text = f"No sign of forgetting (change {-drop:+.1f} points)."
            test = _forgetting_test(results)
            if test is not None:
                text += (
                    f" Items lost: {test['a_only']}, gained: {test['b_only']} "
                    f"(exact McNemar {_p(test['p_value'])})."
                )
            blocks.append(("p", text))
        for key in ("lost", "gained"):
            items = forgetting.get(key)
            if items:
                blocks.append(("p", f"{key}: " + ", ".join(str(i) for i in items)))

    prompts = results.get("prompts") or []
    if prompts:
        blocks.append(("h2", "Prompts side by side (base vs tuned)"))
        rows = [
            [_clip(p.get("prompt"), 600), _clip(p.get("base"), 600), _clip(p.get("tuned"), 600)]
            for p in prompts
        ]
        blocks.append(("table", _Table(["prompt", "base", "tuned"], rows)))
    return blocks


# --------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ")


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def render_markdown(blocks: list[Block], out_dir: Path) -> str:
    """Markdown for the blocks; images are linked relative to ``out_dir``."""
    out: list[str] = []
    for kind, content in blocks:
        if kind in {"h1", "h2", "h3"}:
            out += ["#" * int(kind[1]) + " " + content, ""]
        elif kind == "verdict":
            out += [f"**Verdict:** {content}", ""]
        elif kind == "p":
            out += [content, ""]
        elif kind == "table":
            table: _Table = content
            out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
            out.append(
                "|"
                + "|".join(
                    "---:" if i in table.numeric else "---" for i in range(len(table.headers))
                )
                + "|"
            )
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            out.append("")
        elif kind == "img":
            name, path = content
            out += [f"![{name}]({_relative(path, out_dir)})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.verdict { font-size: 1.15em; background: #f3f7fc; border-left: 5px solid #4c72b0;
           padding: 0.8em 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #d8d8d8; padding: 0.3em 0.6em; vertical-align: top; text-align: left;
         white-space: pre-wrap; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fbfbfb; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def render_html(blocks: list[Block], title: str) -> str:
    """Self-contained HTML for the blocks: inline CSS, images as base64 data URIs."""
    esc = html.escape
    body: list[str] = []
    for kind, content in blocks:
        if kind in {"h1", "h2", "h3"}:
            body.append(f"<{kind}>{esc(content)}</{kind}>")
        elif kind == "verdict":
            body.append(f'<p class="verdict"><strong>Verdict:</strong> {esc(content)}</p>')
        elif kind == "p":
            body.append(f"<p>{esc(content)}</p>")
        elif kind == "table":
            table: _Table = content

            def cls(i: int, t: _Table = table) -> str:
                return ' class="num"' if i in t.numeric else ""

            head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(table.headers))
            rows = "".join(
                "<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                for row in table.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            name, path = content
            if path.is_file():
                mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{esc(name)}" src="data:{mime};base64,{data}">'
                    f"<figcaption>{esc(name)}</figcaption></figure>"
                )
            else:
                body.append(f"<p>(figure {esc(name)} missing: {esc(str(path))})</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays, tuples, Paths converted; NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(out_dir: Path, results: dict[str, Any], plots: dict[str, Path]) -> None:
    """Write ``metrics.json``, ``report.md`` and ``report.html`` into ``out_dir``.

    Each file goes through a temp name and a rename, so a reader (or a crash) never sees half a
    report. ``plots`` maps a caption to a PNG: keys containing "comparison" or "bar" are shown
    under the variants table, the rest under "Figures". Markdown links the PNGs (relative to
    ``out_dir``); the HTML embeds them, so it is the one file to share.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {name: Path(p) for name, p in (plots or {}).items()}
    metrics_text = json.dumps(_jsonable(results), indent=2, ensure_ascii=False, allow_nan=False)
    blocks = _blocks(results, plots)
    title = f"tuneforge eval: {results.get('run', '')}".strip()
    atomic_write_text(out_dir / "metrics.json", metrics_text + "\n")
    atomic_write_text(out_dir / "report.md", render_markdown(blocks, out_dir))
    atomic_write_text(out_dir / "report.html", render_html(blocks, title))
