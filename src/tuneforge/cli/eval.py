"""`tuneforge eval RUN_DIR [--data TEST.jsonl] [-o OUT] [--baselines ...] [--shots K] ...`."""

from __future__ import annotations

from typing import Any

import typer
from rich import box
from rich.table import Table

from tuneforge.cli.common import console, plain_log, quiet_libraries, report_errors


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _pct_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" [{100 * ci[0]:.0f},{100 * ci[1]:.0f}]" if ci else "")


def results_table(results: dict[str, Any]) -> Table:
    """The variants side by side (percentages): quality with 95 % CIs, validity, cost, paired test."""
    from tuneforge.eval.verdict import primary_metric

    classification = results["task"] == "classification"
    key, key_name = primary_metric(results)
    table = Table(
        title=f"{results['task']}, {results['n']} test examples (percent, 95% CI)",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("variant", no_wrap=True)
    table.add_column(key_name, justify="right", no_wrap=True)
    second = "macro_f1" if classification else "exact_match"
    table.add_column("F1" if classification else "exact", justify="right", no_wrap=True)
    if classification:
        table.add_column("invalid", justify="right", no_wrap=True)
    table.add_column("varies", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("tuned-it (p)", justify="right", no_wrap=True)
    table.caption_justify = "left"
    table.caption = (
        "F1: macro-F1; invalid: free generation outside the labels; varies: answers that change across sampling seeds; tokens: mean prompt length; tuned-it: paired difference, McNemar p"
        if classification
        else "varies: answers that change across sampling seeds; tokens: mean prompt length; tuned-it: paired difference of the primary metric"
    )
    for name, v in results["variants"].items():
        block = (v.get("json") or {}) if key.startswith("field_") else v
        cells = [name, _pct_ci(block.get(key), block.get(f"{key}_ci")), _pct(v.get(second))]
        if classification:
            cells.append(_pct(v.get("invalid_rate")))
        cells += [
            _pct(v.get("output_variation")),
            f"{v['prompt_tokens']:.0f}" if v.get("prompt_tokens") is not None else "-",
            f"{v.get('seconds', 0.0):.0f}",
        ]
        comparison = results["comparisons"].get(name)
        if comparison is None:
            cells.append("")
        else:
            diff = comparison["difference"]["diff"]
            p = (comparison.get("mcnemar") or {}).get("p_value")
            cells.append(f"{100 * diff:+.1f}" + (f" ({p:.2g})" if p is not None else ""))
        table.add_row(*cells)
    return table


def print_results(results: dict[str, Any]) -> None:
    """The variants table, the forgetting check and eval's notes."""
    console.print(results_table(results))
    if results.get("forgetting"):
        f = results["forgetting"]
        console.print(
            f"forgetting set: base {f['base']['score']:.2f}, tuned {f['tuned']['score']:.2f} "
            f"(n={f['tuned']['n']})",
            highlight=False,
        )
    for note in results.get("notes") or []:
        console.print(f"note: {note}", highlight=False, markup=False)


@report_errors
def eval_command(
    run_dir: str = typer.Argument(..., help="A run directory written by `tuneforge train`."),
    data: str = typer.Option(
        None,
        "--data",
        help="Test set (a `tuneforge prepare` JSONL); default: the run's test.jsonl.",
    ),
    output: str = typer.Option(
        None, "-o", "--output", help="Report directory (default RUN_DIR/eval)."
    ),
    baselines: str = typer.Option(
        "zero,fewshot,rag,classic",
        "--baselines",
        help="Comma-separated subset of zero,fewshot,rag,classic, or none.",
    ),
    shots: int = typer.Option(8, "--shots", help="Examples in the fewshot and rag prompts."),
    prompts: str = typer.Option(
        None,
        "--prompts",
        help="A file of prompts (one per line) to show base vs tuned answers for.",
    ),
    scoring: str = typer.Option(
        "auto",
        "--scoring",
        help="Classification: exact (the label with the highest log-probability; slower, "
        "often more accurate), constrained (greedy label-trie decoding), or auto (exact up to "
        "20 labels).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per forward pass."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto: models as loaded (float32 on CPU, bfloat16 on CUDA); bf16: bfloat16 matrix "
        "products on CPU too (about 2x faster where the CPU has AVX512-BF16/AMX; near-tied "
        "answers can flip).",
    ),
    limit: int = typer.Option(
        None,
        "--limit",
        help="Evaluate a seeded random sample of N test examples (kept in file order).",
    ),
    forgetting: bool = typer.Option(
        True, "--forgetting/--no-forgetting", help="Score base and tuned on the golden set."
    ),
    variation: bool = typer.Option(
        True, "--variation/--no-variation", help="Measure answer variation under sampling."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing report directory."),
) -> None:
    """Measure the fine-tune against prompting baselines and a classic classifier, with CIs."""
    from tuneforge.eval.baselines import parse_baselines

    chosen = parse_baselines(baselines)
    quiet_libraries()
    from tuneforge.eval.inputs import default_out_dir
    from tuneforge.eval.run import evaluate
    from tuneforge.eval.verdict import verdict

    results = evaluate(
        run_dir,
        data,
        output,
        chosen,
        shots,
        prompts,
        scoring,
        force=force,
        device=device,
        batch_size=batch_size,
        forgetting=forgetting,
        variation=variation,
        limit=limit,
        precision=precision,
        log=plain_log,
    )
    print_results(results)
    console.print(verdict(results), highlight=False, markup=False)
    out = output or default_out_dir(run_dir)
    console.print(
        f"[bold green]report[/] {out}/report.md  {out}/report.html  {out}/metrics.json",
        highlight=False,
    )
