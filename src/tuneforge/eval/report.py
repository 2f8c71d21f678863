"""The evaluation report: a verdict a user can act on, and the evidence behind it.

``write_report`` writes three files into the run's eval directory: ``metrics.json`` (the
``results`` dict as given, for machines), ``report.md`` (for a terminal or a repository) and a
self-contained ``report.html`` (same content, figures embedded as base64 data URIs, no external
assets, so it can be mailed or attached to a ticket). Both documents are rendered from one list
of blocks (:mod:`tuneforge.eval.document`), so they cannot drift apart.

``results`` is the metrics.json structure produced by ``tuneforge eval``; the verdict and the
conventions of its ``comparisons`` entries are in :mod:`tuneforge.eval.verdict`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tuneforge.eval.document import Block, Table, render_html, render_markdown
from tuneforge.eval.verdict import (
    FORGETTING_POINTS,
    as_interval,
    as_number,
    ci_text,
    forgetting_drop,
    forgetting_test,
    metric_value,
    ordered_variants,
    p_value_text,
    pct,
    primary_metric,
    signed_pts,
    strongest_baseline,
    verdict,
)
from tuneforge.fsutil import atomic_write_text

__all__ = ["build_blocks", "write_report"]

TEXT_WIDTH = 300  # characters of example text kept in tables
MAX_ROWS = 25  # examples listed per table
DESCRIPTIONS = {
    "tuned": "the fine-tuned model",
    "base_zero": "base model, zero-shot prompt",
    "base_fewshot": "base model, few-shot prompt",
    "base_rag": "base model, retrieved examples in the prompt",
    "classic": "embedding classifier (no LLM)",
}


# --------------------------------------------------------------------------- document blocks


def _clip(text: Any, width: int = TEXT_WIDTH) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt_ci(variant: Mapping[str, Any], key: str) -> str | None:
    value, ci = metric_value(variant, key)
    if value is None:
        return None
    return pct(value) + (f" ({ci_text(ci)})" if ci else "")


def _fmt_plain(value: Any, fmt: str = "{:.1f}") -> str | None:
    v = as_number(value)
    return None if v is None else fmt.format(v)


def _variants_table(results: Mapping[str, Any], best: str | None) -> Table:
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
    names = ordered_variants(variants)
    cells = {name: [get(variants[name] or {}) for _, get in columns] for name in names}
    keep = [i for i in range(len(columns)) if any(cells[n][i] is not None for n in names)]
    rows = []
    for name in names:
        label = name + (" (strongest baseline)" if name == best else "")
        rows.append([label, DESCRIPTIONS.get(name, "")] + [cells[name][i] or "–" for i in keep])
    headers = ["variant", "what", *[columns[i][0] for i in keep]]
    return Table(headers, rows, set(range(2, len(headers))))


def _comparisons_table(results: Mapping[str, Any], key: str) -> Table | None:
    comparisons = results.get("comparisons") or {}
    variants = results.get("variants") or {}
    if not comparisons:
        return None
    rows = []
    for name in ordered_variants(comparisons):
        comp = comparisons[name] or {}
        mc = comp.get("mcnemar") or {}
        diff = comp.get("difference") or {}
        d = as_number(diff.get("diff"))
        ci = as_interval(diff)
        p = as_number(mc.get("p_value"))
        rows.append(
            [
                name,
                pct(metric_value(variants.get(name), key)[0]),
                "–" if d is None else signed_pts(d),
                ci_text(ci, points=True) or "–",
                str(mc.get("b_only", "–")),
                str(mc.get("a_only", "–")),
                "–" if p is None else p_value_text(p).removeprefix("p ").removeprefix("= "),
                str(mc.get("method", "–")),
            ]
        )
    return Table(
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


def _per_class_table(results: Mapping[str, Any], best: str | None) -> Table | None:
    variants = results.get("variants") or {}
    per_class = (variants.get("tuned") or {}).get("per_class") or {}
    if not per_class:
        return None
    other = (variants.get(best) or {}).get("per_class") or {} if best else {}
    ranked = sorted(per_class.items(), key=lambda kv: (as_number(kv[1].get("f1")) or 0.0, kv[0]))
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
            f_other = as_number((other.get(label) or {}).get("f1"))
            f_tuned = as_number(m.get("f1"))
            row += [
                "–" if f_other is None else f"{f_other:.3f}",
                "–"
                if f_other is None or f_tuned is None
                else f"{f_tuned - f_other:+.3f}".replace("-", "−"),
            ]
        rows.append(row)
    return Table(headers, rows, set(range(1, len(headers))))


def _examples_table(examples: Iterable[Mapping[str, Any]], other: str | None) -> Table:
    headers = ["#", "text", "gold", "tuned"] + ([other] if other else []) + ["confidence"]
    rows = []
    for e in list(examples)[:MAX_ROWS]:
        row = [str(e.get("index", "")), _clip(e.get("text")), _clip(e.get("gold"), 200)]
        row.append(_clip(e.get("pred"), 200))
        if other:
            row.append(_clip(e.get("other_pred"), 200))
        row.append(_fmt_plain(e.get("confidence"), "{:.3f}") or "–")
        rows.append(row)
    return Table(headers, rows, {0, len(headers) - 1})


def _plot_blocks(plots: Mapping[str, Path], names: Iterable[str]) -> list[Block]:
    return [("img", (name, Path(plots[name]))) for name in names if name in plots]


def build_blocks(results: Mapping[str, Any], plots: Mapping[str, Path]) -> list[Block]:
    """The report's content as blocks (see :mod:`tuneforge.eval.document`).

    Also what the dashboard's eval view renders (:mod:`tuneforge.ui.evalview`).
    """
    key, metric_name = primary_metric(results)
    best = strongest_baseline(results, key)
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
        for name in ("model", "method", "scoring", "precision", "shots", "data")
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
                pct(c.get("share_of_gold")),
            ]
            for c in confusions
        ]
        blocks.append(
            ("table", Table(["gold", "predicted", "count", "share of gold"], rows, {2, 3}))
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
        blocks.append(("table", Table(["over", "perplexity"], rows, {1})))
        blocks.append(
            (
                "p",
                "answer: over the answer tokens of every example; sequence: over the whole "
                f"formatted example, {_sequence_rows_text(results)}. Lower is better.",
            )
        )

    forgetting = results.get("forgetting")
    if forgetting:
        blocks.append(("h2", "Forgetting check (general-knowledge set)"))
        rows = [
            [
                name,
                pct((forgetting.get(name) or {}).get("score")),
                str((forgetting.get(name) or {}).get("n", "–")),
            ]
            for name in ("base", "tuned")
            if forgetting.get(name)
        ]
        blocks.append(("table", Table(["model", "score", "n"], rows, {1, 2})))
        drop = forgetting_drop(results)
        if drop is not None:
            if drop >= FORGETTING_POINTS:
                text = f"The tuned model lost {drop:.1f} points: it forgot some general ability."
            elif drop > 0:
                text = f"The tuned model lost {drop:.1f} points, less than the {FORGETTING_POINTS:.0f} points flagged as forgetting."
            else:
                text = f"No sign of forgetting (change {-drop:+.1f} points)."
            test = forgetting_test(results)
            if test is not None:
                text += (
                    f" Items lost: {test['a_only']}, gained: {test['b_only']} "
                    f"(exact McNemar {p_value_text(test['p_value'])})."
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
        blocks.append(("table", Table(["prompt", "base", "tuned"], rows)))
    return blocks


# --------------------------------------------------------------------------- writing


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
    blocks = build_blocks(results, plots)
    title = f"tuneforge eval: {results.get('run', '')}".strip()
    atomic_write_text(out_dir / "metrics.json", metrics_text + "\n")
    atomic_write_text(out_dir / "report.md", render_markdown(blocks, out_dir))
    atomic_write_text(out_dir / "report.html", render_html(blocks, title))


def _sequence_rows_text(results: Mapping[str, Any]) -> str:
    """Which examples the sequence perplexity covers (a sample when the set is large)."""
    sampled, n = results.get("perplexity_sequence_rows"), results.get("n")
    if sampled is None or sampled == n:
        return "every example"
    return f"a seeded sample of {sampled} of the {n} examples"
