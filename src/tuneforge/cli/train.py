"""`tuneforge train CONFIG [key=value ...] -o RUN_DIR [--resume]`.

On several processes: `accelerate launch [--config_file configs/accelerate/ddp.yaml] -m tuneforge
train ...` or `torchrun --nproc_per_node N -m tuneforge train ...` (docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuneforge.cli.common import console, quiet_libraries, report_errors
from tuneforge.config import TrainConfig, resolve

if TYPE_CHECKING:
    from tuneforge.train.loop import TrainResult


@report_errors
def train_command(
    config: str = typer.Argument(..., help="YAML config, e.g. configs/smollm2-135m/lora.yaml"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train.lr=1e-4"),
    output: str = typer.Option(..., "-o", "--output", help="Run directory."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in -o from its latest checkpoint."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in -o."),
) -> None:
    """Fine-tune a model on a prepared dataset (full, LoRA, QLoRA, DoRA, IA3, prompt/prefix tuning)."""
    cfg = resolve(TrainConfig, config, overrides or [])
    quiet_libraries()
    result = train_with_progress(cfg, output, resume=resume, force=force)
    from accelerate import PartialState

    if PartialState().is_main_process:  # launched on several processes: the main one reports
        console.print(summary_line(result))


def train_with_progress(
    cfg: TrainConfig, output: str | Path, *, resume: bool = False, force: bool = False
) -> TrainResult:
    """Run `train` with a rich progress bar (loss, lr, examples/s, ETA) on the console."""
    from tuneforge.train.run import train

    progress = Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task_id = None

    def on_step(record: dict[str, Any]) -> None:
        nonlocal task_id
        if task_id is None:
            task_id = progress.add_task("train", total=record["total_steps"], stats="")
            progress.start()
        stats = f"loss {record['train/loss']:.4f} lr {record['train/lr']:.2e} {record['train/examples_per_s']:.1f} ex/s"
        if "val/loss" in record:
            stats += f" val {record['val/loss']:.4f}"
        progress.update(task_id, completed=record["step"], stats=stats)

    try:
        result = train(cfg, output, resume=resume, force=force, log=console.print, on_step=on_step)
    finally:
        if task_id is not None:
            progress.stop()
    return result


def summary_line(result: TrainResult) -> str:
    """One line: steps, losses, speed, where the run is."""
    best = (
        f", best val loss {result.best_val_loss:.4f} at step {result.best_step}"
        if result.best_val_loss is not None
        else ""
    )
    early = " (stopped early)" if result.stopped_early else ""
    return (
        f"[bold green]trained[/] {result.steps} steps{early}: final train loss {result.final_train_loss:.4f}{best}; "
        f"{result.examples_per_second:.1f} examples/s -> {result.run_dir}/"
    )
