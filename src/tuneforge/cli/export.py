"""`tuneforge export RUN_DIR --to adapter|merged|int4|gguf|ollama -o OUT [--quant Q] ...`."""

from __future__ import annotations

import typer
from rich.markup import escape

from tuneforge.cli.common import console, err_console, quiet_libraries, report_errors


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@report_errors
def export_command(
    run_dir: str = typer.Argument(..., help="A run directory written by `tuneforge train`."),
    to: str = typer.Option(..., "--to", help="adapter, merged, int4, gguf or ollama."),
    output: str = typer.Option(..., "-o", "--output", help="Export directory."),
    quant: str = typer.Option(
        None,
        "--quant",
        help="gguf/ollama: f32 f16 bf16 q8_0 q5_1 q5_0 q4_1 q4_0 (default f16; ollama q8_0); "
        "int4: nf4 or fp4 (default nf4).",
    ),
    dtype: str = typer.Option(
        None, "--dtype", help="merged: float32 (default), bfloat16 or float16."
    ),
    data: str = typer.Option(
        None, "--data", help="Held-out JSONL to validate on (default: the run's test.jsonl)."
    ),
    validate_rows: int = typer.Option(
        64, "--validate-rows", help="Rows of the held-out set the round-trip check runs."
    ),
    min_agreement: float = typer.Option(
        None,
        "--min-agreement",
        help="Fail below this prediction agreement (default 0.99; 0.90 for int4 and 4/5-bit GGUF).",
    ),
    name: str = typer.Option(
        None, "--name", help="Model name for Ollama/vLLM (default: the run directory's name)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export directory."),
) -> None:
    """Export a fine-tune and check that the export behaves like what was trained."""
    quiet_libraries()
    from tuneforge.export.run import export_run

    result = export_run(
        run_dir,
        to,
        output,
        quant=quant,
        dtype=dtype,
        data=data,
        validate_rows=validate_rows,
        min_agreement=min_agreement,
        name=name,
        device=device,
        force=force,
        log=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
    )
    for file, size in result.files.items():
        console.print(f"  {file}  {_size(size)}", highlight=False, markup=False, soft_wrap=True)
    check = result.validation
    console.print(
        f"[bold green]validated[/] {check.summary()} (required {100 * check.min_agreement:.0f} %)",
        highlight=False,
        soft_wrap=True,
    )
    if result.metadata.get("merge_note"):
        console.print(f"note: {result.metadata['merge_note']}", highlight=False, markup=False)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for line in result.instructions:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"[bold green]exported[/] {result.kind} -> {escape(str(result.out))}/ "
        "(MODEL_CARD.md, tuneforge.json)",
        highlight=False,
        soft_wrap=True,
    )
