"""`tuneforge compare CONFIG [key=value ...] --grid KEY=V1,V2 ... [-o OUT] [--budget-minutes M]`."""

from __future__ import annotations

import typer

from tuneforge.cli.common import console, plain_log, quiet_libraries, report_errors


@report_errors
def compare_command(
    config: str = typer.Argument(..., help="YAML config, e.g. configs/smollm2-135m/lora.yaml"),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides for every variant, e.g. data.dir=data train.max_steps=50"
    ),
    grid: list[str] = typer.Option(
        None,
        "--grid",
        help="KEY=V1,V2,... (repeatable; cartesian product). Config keys (method.r, train.lr) "
        "or short forms: method=lora,qlora,full sets method.kind; lora.r=4,16,64 sets method.r.",
    ),
    output: str = typer.Option("compare", "-o", "--output", help="Output directory."),
    budget_minutes: float = typer.Option(
        None,
        "--budget-minutes",
        help="Start no new variant once this much wall time has passed (in this invocation); "
        "skipped variants are listed in the summary.",
    ),
    data: str = typer.Option(
        None, "--data", help="Test split for every variant (default: data.dir/test.jsonl)."
    ),
    baselines: str = typer.Option(
        "zero,fewshot",
        "--baselines",
        help="Prompt-only rows, scored once: subset of zero,fewshot,rag,classic, or none.",
    ),
    shots: int = typer.Option(8, "--shots", help="Examples in the fewshot/rag prompts."),
    limit: int = typer.Option(
        None, "--limit", help="Evaluate a seeded random sample of N test examples."
    ),
    device: str = typer.Option("cpu", "--device", help="Evaluation device: cpu, cuda, mps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Evaluation examples per pass."),
    scoring: str = typer.Option(
        "auto", "--scoring", help="Classification: exact, constrained or auto (see tuneforge eval)."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="Evaluation: auto or bf16 (see tuneforge eval)."
    ),
    price_per_hour: float = typer.Option(
        None, "--price-per-hour", help="Dollars per hour of this machine, for the cost column."
    ),
    force: bool = typer.Option(
        False, "--force", help="Delete OUT's earlier results and start again."
    ),
) -> None:
    """Fine-tune each grid variant, evaluate all on one test split, name the winner per cost.

    Resumable: rerun the same command and finished variants are not run again; a variant
    stopped mid-training resumes from its last checkpoint.
    """
    from tuneforge.compare.plan import plan_comparison
    from tuneforge.compare.runner import EvalOptions, run_comparison
    from tuneforge.eval.baselines import parse_baselines

    opts = EvalOptions(
        baselines=parse_baselines(baselines),
        shots=shots,
        limit=limit,
        device=device,
        batch_size=batch_size,
        scoring=scoring,
        precision=precision,
    )
    comp = plan_comparison(
        config,
        overrides or [],
        grid or [],
        output,
        opts,
        data=data,
        budget_minutes=budget_minutes,
        price_per_hour=price_per_hour,
        force=force,
    )
    console.print(
        f"compare: {len(comp.variants)} variant(s): {', '.join(v.name for v in comp.variants)}",
        highlight=False,
    )
    quiet_libraries()
    summary = run_comparison(comp, log=plain_log)
    console.print(summary["verdict"], highlight=False, markup=False)
    console.print(f"[bold green]summary[/] {comp.paths.out}/summary.md", highlight=False)
