"""`evaluate`: the fine-tune against its baselines on one test set, written as a report.

    check inputs (nothing loads before they pass) -> load the run -> tuned model: predictions,
    free generation, perplexity, forgetting, sample prompts, output variation -> base model
    (the adapter switched off in place, or loaded again after a full fine-tune): zero-shot,
    few-shot, retrieval few-shot, forgetting, prompts, variation -> classic classifier ->
    metrics, intervals, paired tests -> metrics.json, report.md/.html, plots, predictions.jsonl

Everything is written to a temp directory renamed into place at the end, so a failure leaves
no output directory, and an existing one is only replaced with `force`.

The steps live in their own modules: checking the inputs in :mod:`tuneforge.eval.inputs`,
running a variant in :mod:`tuneforge.eval.runner`, its scores and the paired comparisons in
:mod:`tuneforge.eval.summary`, the verdict and the report in :mod:`tuneforge.eval.verdict` and
:mod:`tuneforge.eval.report`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import TuneforgeError
from tuneforge.eval import baselines as bl
from tuneforge.eval import summary as sm
from tuneforge.eval.inputs import Messages, Plan, make_plan
from tuneforge.eval.runner import Runner, Variant, conversations_for
from tuneforge.eval.verdict import VARIANT_ORDER, metric_value, primary_metric, strongest_baseline

DEFAULT_SHOTS = 8
WORST_K = 10


def evaluate(
    run_dir: str | Path,
    data_path: str | Path | None,
    out_dir: str | Path | None = None,
    baselines: Sequence[str] = bl.ALL_BASELINES,
    shots: int = DEFAULT_SHOTS,
    prompts_file: str | Path | None = None,
    scoring: str = "auto",
    *,
    force: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    forgetting: bool = True,
    variation: bool = True,
    limit: int | None = None,
    precision: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate the run in `run_dir` on `data_path`; write the report into `out_dir`.

    `out_dir` defaults to RUN_DIR/eval. Returns the results (what metrics.json holds).
    `precision`: `auto` runs every model as loaded, `bf16` with bfloat16 matrix products
    (:mod:`tuneforge.models.precision`); all variants run at the same precision.
    Bad inputs raise TuneforgeError before anything is loaded or written.
    """
    from tuneforge.fsutil import atomic_directory
    from tuneforge.models.precision import check_precision, cpu_has_native_bf16

    if batch_size < 1:
        raise TuneforgeError(f"--batch-size must be at least 1 (got {batch_size})")
    check_precision(precision)
    plan = make_plan(
        run_dir, data_path, out_dir, baselines, shots, prompts_file, scoring, force, limit
    )
    if precision == "bf16" and device == "cpu" and not cpu_has_native_bf16():
        plan.notes.append(
            "--precision bf16 on a CPU without native bfloat16 (AVX512-BF16/AMX) is emulated "
            "and slower than float32"
        )
        log(f"note: {plan.notes[-1]}")
    with atomic_directory(plan.out_dir, overwrite=force) as tmp:
        results = _evaluate(
            plan, tmp, shots, scoring, device, batch_size, forgetting, variation, precision, log
        )
    return results


def _evaluate(
    plan: Plan,
    tmp: Path,
    shots: int,
    scoring: str,
    device: str,
    batch_size: int,
    with_forgetting: bool,
    with_variation: bool,
    precision: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from tuneforge.eval import forgetting as fg
    from tuneforge.eval.perplexity import PERPLEXITY_SEQUENCE_ROWS, perplexity
    from tuneforge.models.precision import inference_precision, precision_label
    from tuneforge.models.trained import (
        base_model_view,
        is_adapter_model,
        load_base,
        load_trained,
        merged_adapter,
    )

    run = plan.run
    n = len(plan.rows)
    log(f"loading {run.path} ({run.config.method.kind} on {run.config.model.name})")
    model, tokenizer, cfg = load_trained(run.path, device=device)
    computed_in = precision_label(model, precision)
    runner = Runner(
        tokenizer,
        run.labels,
        plan.rows[0]["messages"][:-1],
        plan.gold,
        scoring=scoring,
        batch_size=batch_size,
    )
    variants: dict[str, Variant] = {}

    # -- the fine-tuned model ------------------------------------------------------------------
    # Every variant runs at the same `precision`; the adapter is folded in float32 first, once
    # for everything the tuned model computes (the base baselines below need it unfolded).
    prompt_outputs: dict[str, list[str]] = {}
    with merged_adapter(model), inference_precision(model, precision):
        tuned = runner.run("tuned", model, _conversations("tuned", plan, shots))
        variants["tuned"] = tuned
        log(f"tuned: {n} examples in {_timing(tuned)}")
        started = time.perf_counter()
        sequence_rows = min(n, PERPLEXITY_SEQUENCE_ROWS)
        ppl = perplexity(
            model,
            tokenizer,
            plan.rows,
            max_seq_len=cfg.model.max_seq_len,
            batch_size=batch_size,
            sequence_rows=sequence_rows,
        )
        seconds = time.perf_counter() - started
        log(f"perplexity: {n} examples ({sequence_rows} whole sequences) in {seconds:.1f} s")
        forgetting_tuned = fg.forgetting_score(runner.predictor(model)) if with_forgetting else None
        if plan.prompts:
            prompt_outputs["tuned"] = runner.answer_prompts(model, plan.prompts)
        if with_variation:
            tuned.variation = runner.variation(model, tuned)

    # -- the base model --------------------------------------------------------------------------
    base_needed = bool(
        [b for b in plan.baselines if b in bl.PROMPTING] or with_forgetting or plan.prompts
    )
    forgetting_base = None
    if base_needed:
        if is_adapter_model(model):
            base_scope = base_model_view(model)
        else:
            log("loading the base model again (full fine-tune)")
            del model
            base_scope = contextlib.nullcontext(load_base(run.path, device=device)[0])
        with base_scope as base, inference_precision(base, precision):
            for kind in bl.PROMPTING:
                if kind not in plan.baselines:
                    continue
                variant = runner.run(f"base_{kind}", base, _conversations(kind, plan, shots))
                variants[variant.name] = variant
                log(f"base {kind}: {n} examples in {_timing(variant)}")
            if with_forgetting:
                forgetting_base = fg.forgetting_score(runner.predictor(base))
            if plan.prompts:
                prompt_outputs["base"] = runner.answer_prompts(base, plan.prompts)
            prompting = [v for name, v in variants.items() if name.startswith("base_")]
            if with_variation and prompting:
                best = max(prompting, key=lambda v: float(np.mean(sm.correctness(plan, v.pred))))
                best.variation = runner.variation(base, best)

    # -- the classic classifier ------------------------------------------------------------------
    if "classic" in plan.baselines:
        started = time.perf_counter()
        try:
            pred, confidence, choice = bl.classic_baseline(
                [bl.example_text(row) for row in plan.train_rows],
                [row["label"] for row in plan.train_rows],
                [bl.example_text(row) for row in plan.rows],
            )
        except bl.BaselineUnavailable as exc:
            plan.notes.append(str(exc))
            log(f"note: {exc}")
        else:
            variants["classic"] = Variant(
                "classic", pred, list(confidence), time.perf_counter() - started
            )
            plan.notes.append(f"classic: {choice}")
            log(f"classic: {n} examples in {variants['classic'].seconds:.1f} s")

    # -- results -----------------------------------------------------------------------------------
    variants = {name: variants[name] for name in VARIANT_ORDER if name in variants}
    summaries = {name: sm.summarize(plan, v) for name, v in variants.items()}
    key, _ = primary_metric({"task": run.task, "variants": summaries})
    strongest = strongest_baseline({"variants": summaries}, key)
    other = variants[strongest] if strongest else None
    gold_cmp = sm.compared_strings(plan, plan.gold)
    tuned_cmp = sm.compared_strings(plan, tuned.pred)
    from tuneforge.eval import metrics

    flipped = None
    if other is not None:
        flips = metrics.flipped(gold_cmp, sm.compared_strings(plan, other.pred), tuned_cmp)
        flipped = {
            "vs": strongest,
            "fixed": sm.examples(plan, flips["fixed"], tuned, other),
            "broken": sm.examples(plan, flips["broken"], tuned, other),
        }
    worst = metrics.worst_examples(gold_cmp, tuned_cmp, tuned.confidence, k=WORST_K)
    results: dict[str, Any] = {
        "task": run.task,
        "run": str(run.path),
        "n": n,
        "labels": run.labels,
        "variants": summaries,
        "comparisons": sm.comparisons(plan, variants, key),
        "confusions": (
            metrics.top_confusions(plan.gold, tuned.pred, k=10) if run.labels is not None else []
        ),
        "flipped": flipped,
        "worst": sm.examples(plan, worst, tuned, other),
        "perplexity": ppl,
        "perplexity_sequence_rows": sequence_rows,
        "forgetting": (
            fg.compare(forgetting_base, forgetting_tuned)
            if forgetting_base is not None and forgetting_tuned is not None
            else None
        ),
        "prompts": (
            [
                {"prompt": text, "base": base_out, "tuned": tuned_out}
                for text, base_out, tuned_out in zip(
                    plan.prompt_texts, prompt_outputs["base"], prompt_outputs["tuned"], strict=True
                )
            ]
            if plan.prompts
            else None
        ),
        "data": str(plan.data_path),
        "model": run.config.model.name,
        "method": run.config.method.kind,
        "scoring": runner.scoring,
        "precision": computed_in,
        "shots": shots if {"fewshot", "rag"} & set(plan.baselines) else None,
        "notes": plan.notes,
    }
    _write(plan, tmp, results, variants, key)
    return results


def _timing(variant: Variant) -> str:
    """'12.3 s', or '12.3 s (free generation 45.6 s)' when the variant also answered freely."""
    if variant.free_seconds is None:
        return f"{variant.seconds:.1f} s"
    return f"{variant.seconds:.1f} s (free generation {variant.free_seconds:.1f} s)"


def _conversations(kind: str, plan: Plan, shots: int) -> list[Messages]:
    labels, seed = plan.run.labels, plan.run.config.train.seed
    return conversations_for(kind, plan.rows, labels, plan.train_rows, shots, seed)


def _write(
    plan: Plan, tmp: Path, results: dict[str, Any], variants: dict[str, Variant], key: str
) -> None:
    from tuneforge.eval import plots as pl
    from tuneforge.eval.report import write_report

    plots: dict[str, Path] = {}
    bars = {}
    for name, summary in results["variants"].items():
        value, (lo, hi) = metric_value(summary, key)
        bars[name] = (value, lo, hi)
    plots["comparison"] = tmp / "comparison.png"
    pl.comparison_bar_png(bars, plots["comparison"], key.replace("_", " "))
    if plan.run.labels is not None:
        plots["confusion_tuned"] = tmp / "confusion_tuned.png"
        pl.confusion_matrix_png(
            plan.gold, variants["tuned"].pred, plan.run.labels, plots["confusion_tuned"],
            title="fine-tuned",
        )  # fmt: skip
        strongest = results["flipped"]["vs"] if results["flipped"] else None
        if strongest is not None:
            plots[f"confusion_{strongest}"] = tmp / f"confusion_{strongest}.png"
            pl.confusion_matrix_png(
                plan.gold, variants[strongest].pred, plan.run.labels,
                plots[f"confusion_{strongest}"], title=strongest,
            )  # fmt: skip
    with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(plan.rows):
            record: dict[str, Any] = {
                "index": i,
                "text": bl.example_text(row),
                "gold": plan.gold[i],
            }
            for name, variant in variants.items():
                record[name] = variant.pred[i]
                record[f"{name}_confidence"] = variant.confidence[i]
                if variant.free is not None:
                    record[f"{name}_free"] = variant.free[i]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    write_report(tmp, results, plots)
