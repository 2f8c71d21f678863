"""The comparison's result: one row per variant (and per prompt-only baseline), the winner.

Winner rule: the highest point estimate of the task's primary metric (accuracy for
classification; token F1, or JSON field F1, for generation -- what `tuneforge eval` decides
on). Exact ties go to the cheaper row: less training wall time (a prompt-only baseline costs no
training). The rows whose 95 % interval overlaps the winner's are listed as "not separable on
this test set", with the cheapest of them, because a small test set often cannot tell variants
apart and the cheaper one is then the better buy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.fsutil import atomic_write_text

if TYPE_CHECKING:
    from tuneforge.compare.runner import Comparison, Outcome

BASELINE_NAMES = {
    "base_zero": "prompt-only: zero-shot",
    "base_fewshot": "prompt-only: few-shot",
    "base_rag": "prompt-only: retrieval few-shot",
    "classic": "classic classifier",
}
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")


def _read(path: Path) -> dict[str, Any] | None:
    from tuneforge.compare.runner import read_json

    return read_json(path)


def weights_bytes(run_dir: Path) -> int | None:
    """Size of what the run saved as its trained weights (adapter, or the full model)."""
    found = [run_dir / name for name in WEIGHT_FILES if (run_dir / name).is_file()]
    found += sorted(run_dir.glob("model-*.safetensors"))  # a sharded full model
    return sum(p.stat().st_size for p in found) if found else None


def _metric(block: Mapping[str, Any], key: str) -> tuple[float | None, list[float] | None]:
    if key.startswith("field_"):
        block = block.get("json") or {}
    value, ci = block.get(key), block.get(f"{key}_ci")
    return (float(value) if value is not None else None), (list(ci) if ci else None)


def variant_row(comp: Comparison, name: str, outcome: Outcome | None, key: str) -> dict[str, Any]:
    variant = next(v for v in comp.variants if v.name == name)
    run_dir = comp.paths.run(name)
    row: dict[str, Any] = {
        "name": name,
        "kind": "fine-tune",
        "settings": variant.settings,
        "method": variant.config.method.kind,
        "status": outcome.status if outcome else "pending",
        "reason": outcome.reason if outcome else None,
        "actions": outcome.actions if outcome else [],
        "run_dir": str(run_dir),
    }
    manifest = _read(run_dir / "manifest.json")
    if manifest:
        result = manifest.get("result") or {}
        peak = manifest.get("peak_memory_bytes") or {}
        row.update(
            steps=result.get("steps"),
            final_train_loss=result.get("final_train_loss"),
            val_loss=result.get("best_val_loss"),
            train_seconds=result.get("wall_seconds"),
            process_seconds=manifest.get("wall_seconds"),
            examples_per_second=result.get("examples_per_second"),
            peak_memory_bytes=peak.get("cuda_allocated", peak.get("rss")),
            peak_memory_kind="cuda_allocated" if "cuda_allocated" in peak else "rss",
            trainable_parameters=(manifest.get("parameters") or {}).get("trainable"),
            total_parameters=(manifest.get("parameters") or {}).get("total"),
            weights_bytes=weights_bytes(run_dir),
            device=(manifest.get("hardware") or {}).get("device"),
        )
    metrics = _read(comp.paths.eval(name) / "metrics.json")
    tuned = (metrics or {}).get("variants", {}).get("tuned")
    if tuned and row["status"] == "done":
        row["metric"], row["metric_ci"] = _metric(tuned, key)
        row["eval_seconds"] = tuned.get("seconds")
    if comp.price_per_hour is not None and row.get("train_seconds") is not None:
        row["cost_usd"] = row["train_seconds"] / 3600 * comp.price_per_hour
    return row


def baseline_rows(comp: Comparison, key: str) -> list[dict[str, Any]]:
    """Prompt-only (and classic) rows, from whichever variant's evaluation scored them."""
    from tuneforge.compare.runner import base_key

    rows, seen_models = [], set()
    many_models = len({base_key(v.config) for v in comp.variants}) > 1
    wanted = {f"base_{b}" if b != "classic" else "classic" for b in comp.eval_opts.baselines}
    for variant in comp.variants:
        model_key = base_key(variant.config)
        metrics = _read(comp.paths.eval(variant.name) / "metrics.json")
        if model_key in seen_models or not metrics:
            continue
        found = {n: v for n, v in (metrics.get("variants") or {}).items() if n in wanted}
        if not found:
            continue
        seen_models.add(model_key)
        for name, block in found.items():
            label = BASELINE_NAMES.get(name, name)
            if many_models:
                label += f" ({variant.config.model.name})"
            value, ci = _metric(block, key)
            rows.append(
                {
                    "name": label,
                    "kind": "baseline",
                    "baseline": name,
                    "from_eval_of": variant.name,
                    "status": "done",
                    "metric": value,
                    "metric_ci": ci,
                    "train_seconds": 0.0,
                    "trainable_parameters": 0,
                    "eval_seconds": block.get("seconds"),
                    "cost_usd": 0.0 if comp.price_per_hour is not None else None,
                }
            )
    return rows


def _cost(row: Mapping[str, Any]) -> float:
    return float(row.get("train_seconds") or 0.0)


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored rows, best first: metric descending, then training time ascending."""
    scored = [r for r in rows if r.get("metric") is not None]
    return sorted(scored, key=lambda r: (-r["metric"], _cost(r)))


def _overlaps(a: list[float] | None, b: list[float] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def decide(rows: list[dict[str, Any]], metric_name: str) -> dict[str, Any]:
    """The winner, the rows not separable from it, and one honest sentence about it."""
    ranked = rank(rows)
    if not ranked:
        return {
            "winner": None,
            "ranking": [],
            "not_separable": [],
            "cheapest_not_separable": None,
            "verdict": "No winner: no variant finished training and evaluation.",
        }
    best = ranked[0]
    close = [r["name"] for r in ranked[1:] if _overlaps(r.get("metric_ci"), best.get("metric_ci"))]
    cheaper = [r for r in ranked[1:] if r["name"] in close and _cost(r) < _cost(best)]
    cheapest = min(cheaper, key=_cost)["name"] if cheaper else None
    pct = f"{100 * best['metric']:.1f} %"
    tuned = [r for r in ranked if r["kind"] == "fine-tune"]
    if best["kind"] == "baseline":
        verdict = (
            f"Winner: {best['name']} ({metric_name} {pct}). Prompting the base model beats every "
            "fine-tuned variant here: fine-tuning did not pay off on this data and budget."
        )
    else:
        verdict = f"Winner: {best['name']} ({metric_name} {pct})."
        baselines = [r for r in ranked if r["kind"] == "baseline"]
        if baselines and baselines[0]["name"] in close:
            verdict += (
                f" Its interval overlaps the best prompt-only row ({baselines[0]['name']}): "
                "on this test set it is not clearly better than prompting."
            )
    if cheapest is not None:
        verdict += (
            f" {cheapest} is cheaper and not separable from it on this test set "
            "(overlapping 95 % intervals)."
        )
    if not tuned:
        verdict += " No fine-tuned variant finished."
    return {
        "winner": best["name"],
        "ranking": [r["name"] for r in ranked],
        "not_separable": close,
        "cheapest_not_separable": cheapest,
        "verdict": verdict,
    }


def build_summary(comp: Comparison, outcomes: Mapping[str, Outcome]) -> dict[str, Any]:
    from tuneforge.eval.verdict import METRIC_NAMES, primary_metric

    key, task = None, None
    for variant in comp.variants:
        metrics = _read(comp.paths.eval(variant.name) / "metrics.json")
        if metrics:
            key, _ = primary_metric(metrics)
            task = metrics.get("task")
            break
    key = key or "accuracy"
    rows = [variant_row(comp, v.name, outcomes.get(v.name), key) for v in comp.variants]
    rows += baseline_rows(comp, key)
    metric_name = METRIC_NAMES.get(key, key)
    return {
        "config": str(comp.config),
        "overrides": comp.overrides,
        "grid": [a.spec for a in comp.axes],
        "test_data": str(comp.eval_opts.data),
        "test_examples": comp.expected_n,
        "task": task,
        "metric": key,
        "metric_name": metric_name,
        "budget_minutes": comp.budget_seconds / 60 if comp.budget_seconds is not None else None,
        "price_per_hour": comp.price_per_hour,
        "rows": rows,
        "skipped": [r["name"] for r in rows if r["status"] == "skipped"],
        "failed": [r["name"] for r in rows if r["status"] == "failed"],
        **decide(rows, metric_name),
    }


def write_summary(comp: Comparison, outcomes: Mapping[str, Outcome]) -> dict[str, Any]:
    """summary.json, summary.md and the two plots in OUT (each written atomically)."""
    from tuneforge.compare.markdown import render
    from tuneforge.compare.plots import quality_plots

    summary = build_summary(comp, outcomes)
    out = comp.paths.out
    out.mkdir(parents=True, exist_ok=True)
    plots = quality_plots(summary, out)
    summary["plots"] = {name: path.name for name, path in plots.items()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", render(summary))
    return summary
