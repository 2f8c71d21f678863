"""`tuneforge demo`: the pipeline on the embedded default (demo dataset, SmolLM2-135M).

Stages land as the pipeline grows; today: prepare the shipped support-intent dataset and show
its report.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markdown import Markdown
from rich.rule import Rule

from tuneforge.cli.common import console, report_errors
from tuneforge.config import PrepareConfig, resolve
from tuneforge.data.demo_data import demo_path


@report_errors
def demo_command(
    output_dir: str = typer.Option("demo-output", "-o", "--output", help="Where artifacts go."),
    model: str = typer.Option("smollm2-135m", "--model", help="Packaged model (tokenizer)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the pipeline end to end on the shipped demo dataset."""
    from tuneforge.data.prepare import prepare
    from tuneforge.models.load import load_tokenizer

    out = Path(output_dir)
    data_dir = out / "data"
    console.print(Rule("[bold]1 · prepare[/]"))
    cfg = resolve(
        PrepareConfig,
        base={
            "inputs": [str(demo_path())],
            "output_dir": str(data_dir),
            "tokenizer": model,
            "seed": seed,
            "force": True,
        },
        source="tuneforge demo",
    )
    with console.status(f"loading tokenizer {model}"):
        tokenizer = load_tokenizer(model)
    with console.status("validating, cleaning, deduplicating, splitting"):
        outcome = prepare(cfg, tokenizer)
    console.print(Markdown((data_dir / "report.md").read_text(encoding="utf-8")))
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in outcome.splits.items())
    console.print(f"\n[bold green]done[/]: {sizes}; artifacts in {data_dir}/")
