"""`tuneforge estimate CONFIG [key=value ...] [--gpu t4,a10g] [--examples N --epochs E]`."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich import box
from rich.table import Table

from tuneforge.cli.common import console, plain_log, quiet_libraries, report_errors

GIB = 2**30


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


SHORT = {"fp32 (CPU)": "fp32 cpu", "bf16 (CUDA)": "bf16 gpu"}


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.2f}" if value >= 0.01 else f"${value:.1g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def memory_table(result: dict[str, Any]) -> Table:
    tokens = result["tokens"]
    table = Table(
        title=f"training memory, GiB ({tokens['per_pass']} tokens in the largest forward pass, "
        f"{'packed' if tokens.get('packed') else 'padded'} rows: {tokens['per_pass_from']})",
        header_style="bold",
        box=box.SIMPLE_HEAD,
    )
    for column in ("method", "dtype", "weights", "grads", "optim", "activ"):
        table.add_column(column, justify="left" if column in ("method", "dtype") else "right")
    table.add_column("runtime", justify="right")
    table.add_column("total", justify="right", style="bold")
    table.add_column("trainable", justify="right")
    for kind, block in result["methods"].items():
        trainable = f"{block['parameters']['trainable']:,}"
        for precision, parts in block["memory_bytes"].items():
            table.add_row(
                kind, SHORT.get(precision, precision), *(_gib(parts[k]) for k in
                ("weights", "gradients", "optimizer", "activations", "runtime", "total")),
                trainable,
            )  # fmt: skip
    table.caption = (
        "live memory; runtime: this machine's framework RSS (CPU) / CUDA context and slack "
        "(GPU). On CPU, glibc's heap can keep peak RSS up to ~45 % higher (measured; see "
        "tuneforge/estimate/memory.py)"
    )
    return table


def gpu_table(result: dict[str, Any]) -> Table:
    table = Table(title="bf16 on each GPU: fits? and FLOP-based time/cost", box=box.SIMPLE_HEAD)
    table.add_column("gpu", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("$/h", justify="right")
    for kind in result["methods"]:
        table.add_column(f"{kind} fits", justify="center")
    table.add_column("time", justify="right")
    table.add_column("cost", justify="right")
    for name, gpu in result["gpus"].items():
        cost = result["cost"][name]
        table.add_row(
            name, f"{gpu['memory_gib']:g} GiB", f"{gpu['price_per_hour']:.2f}",
            *("yes" if result["fits"][name][k] else "[red]no[/]" for k in result["methods"]),
            _duration(cost["seconds"]),
            _usd(cost["usd"]),
        )  # fmt: skip
    table.caption = (
        f"time/cost for the configured method ({result['method']}) at the table's bf16 peak x "
        f"utilization (an assumption, not measured); table: {result['prices']}"
    )
    return table


@report_errors
def estimate_command(
    config: str = typer.Argument(..., help="YAML config, e.g. configs/smollm2-135m/lora.yaml"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. data.dir=DATA"),
    gpu: str = typer.Option(
        None, "--gpu", help="Comma-separated GPUs from the price table (default: all of them)."
    ),
    examples: int = typer.Option(
        None, "--examples", help="Training examples (default: rows in data.dir/train.jsonl)."
    ),
    epochs: float = typer.Option(None, "--epochs", help="Epochs (default: train.epochs)."),
    prices: str = typer.Option(
        None, "--prices", help="A GPU table (YAML/JSON) like tuneforge/estimate/gpus.yaml."
    ),
    probe_steps: int = typer.Option(
        3,
        "--probe-steps",
        help="Timed training steps on this machine (after one warm-up); 0 skips the probe.",
    ),
    json_out: str = typer.Option(None, "--json", help="Also write the full estimate here."),
) -> None:
    """Memory per method and precision, fit per GPU, time from a short probe, and cost."""
    from tuneforge.config import TrainConfig, resolve

    cfg = resolve(TrainConfig, config, overrides or [])
    names = [n.strip() for n in gpu.split(",") if n.strip()] if gpu else None
    if probe_steps < 0:
        from tuneforge.errors import TuneforgeError

        raise TuneforgeError(f"--probe-steps must be 0 or more (got {probe_steps})")
    quiet_libraries()
    from tuneforge.estimate.run import estimate

    result = estimate(
        cfg,
        gpus=names,
        examples=examples,
        epochs=epochs,
        prices=prices,
        probe_steps=probe_steps,
        log=plain_log,
    )
    console.print(memory_table(result))
    console.print(gpu_table(result))
    timing = result["time"]
    if "total_seconds" in timing:
        probe = timing["probe"]
        console.print(
            f"time here ({probe['device']}, measured): {probe['seconds_per_example']:.3f} s per "
            f"example over {probe['examples_timed']} examples -> {timing['examples_seen']:,} "
            f"examples: train {_duration(timing['train_seconds'])}, validation "
            f"{_duration(timing['validation_seconds'])}, total {_duration(timing['total_seconds'])} "
            f"(incl. {probe['load_seconds']:.0f} s load)",
            highlight=False,
        )
    elif "note" in timing:
        console.print(f"note: {timing['note']}", highlight=False)
    if json_out:
        from tuneforge.fsutil import atomic_write_text

        atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
        console.print(f"[bold green]estimate[/] {json_out}", highlight=False)
