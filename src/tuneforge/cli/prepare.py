"""`tuneforge prepare INPUT... -o OUT_DIR`: validate, clean, dedupe and split raw examples."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from tuneforge.cli.common import console, report_errors
from tuneforge.config import PrepareConfig, resolve
from tuneforge.errors import TuneforgeError


def _labels_option(value: str | None) -> list[str] | None:
    """--labels a,b,c or --labels FILE (a JSON list, or one label per line)."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        import json

        text = path.read_text(encoding="utf-8")
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            loaded = [line.strip() for line in text.splitlines() if line.strip()]
        if not isinstance(loaded, list) or not all(isinstance(x, str) for x in loaded):
            raise TuneforgeError(
                f"{value}: --labels file must be a JSON list of strings or one label per line"
            )
        if not loaded:
            raise TuneforgeError(f"{value}: --labels file lists no labels")
        return loaded
    if path.is_dir():
        raise TuneforgeError(f"--labels {value}: is a directory; give a file or a,b,c")
    if "," not in value and (os.sep in value or path.suffix in (".txt", ".json", ".csv")):
        raise TuneforgeError(f"--labels {value}: no such file; give a file or a,b,c")
    parsed = [part.strip() for part in value.split(",") if part.strip()]
    if not parsed:
        raise TuneforgeError(f"--labels {value!r}: no labels in it; give a,b,c or a file")
    return parsed


def _split_option(value: str) -> list[float]:
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        raise TuneforgeError(
            f"--split {value!r}: expected three fractions like 0.8,0.1,0.1"
        ) from None
    if len(parts) != 3 or not all(math.isfinite(p) for p in parts):
        raise TuneforgeError(
            f"--split {value!r}: expected three fractions train,val,test like 0.8,0.1,0.1"
        )
    return parts


@report_errors
def prepare_command(
    inputs: list[str] = typer.Argument(
        ..., help="CSV/TSV, JSONL, JSON, Parquet files or hf:OWNER/NAME[:SPLIT]."
    ),
    output_dir: str | None = typer.Option(
        None, "-o", "--output", help="Output directory (written atomically)."
    ),
    format: str = typer.Option(
        "auto", "--format", help="auto|chat|alpaca|prompt_completion|text_label"
    ),
    task: str = typer.Option("auto", "--task", help="auto|classification|generation"),
    text_col: str | None = typer.Option(None, "--text-col"),
    label_col: str | None = typer.Option(None, "--label-col"),
    prompt_col: str | None = typer.Option(None, "--prompt-col"),
    response_col: str | None = typer.Option(None, "--response-col"),
    system: str | None = typer.Option(
        None, "--system", help="System prompt added to every example."
    ),
    template: str = typer.Option(
        "{text}", "--template", help="User message template; {text} is the input."
    ),
    labels: str | None = typer.Option(None, "--labels", help="Allowed labels: a,b,c or a file."),
    tokenizer: str = typer.Option(
        "smollm2-135m", "--tokenizer", help="Tokenizer for token counts."
    ),
    max_tokens: int = typer.Option(2048, "--max-tokens"),
    max_line_bytes: int = typer.Option(1_000_000, "--max-line-bytes"),
    on_error: str = typer.Option(
        "fail", "--on-error", help="fail|skip (skip writes rejected.jsonl)"
    ),
    near_dedup: str = typer.Option("report", "--near-dedup", help="report|drop"),
    near_dup_threshold: float = typer.Option(0.8, "--near-dup-threshold", help="Jaccard, 0-1"),
    conflicts: str = typer.Option("drop", "--conflicts", help="drop|majority|keep"),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="train,val,test fractions"),
    seed: int = typer.Option(0, "--seed"),
    test_file: str | None = typer.Option(
        None, "--test", help="Keep this test set; check train for leaks."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT_DIR if it exists."),
    preview: int = typer.Option(0, "--preview", min=0, help="Print N rendered examples and exit."),
) -> None:
    """Validate, clean, deduplicate and split raw examples into chat JSONL with a manifest."""
    if preview <= 0 and output_dir is None:
        raise TuneforgeError("missing -o OUT_DIR (where train/val/test.jsonl are written)")
    options: dict[str, Any] = {
        "inputs": inputs,
        "output_dir": output_dir or "",
        "format": format,
        "task": task,
        "text_col": text_col,
        "label_col": label_col,
        "prompt_col": prompt_col,
        "response_col": response_col,
        "system": system,
        "template": template,
        "labels": _labels_option(labels),
        "tokenizer": tokenizer,
        "max_tokens": max_tokens,
        "max_line_bytes": max_line_bytes,
        "on_error": on_error,
        "near_dedup": near_dedup,
        "near_dup_threshold": near_dup_threshold,
        "conflicts": conflicts,
        "split": _split_option(split),
        "seed": seed,
        "test_file": test_file,
        "force": force,
    }
    cfg = resolve(
        PrepareConfig,
        base=options,
        source="tuneforge prepare",
        options={"inputs": "INPUTS", "output_dir": "-o", "test_file": "--test"},
    )
    from tuneforge.models.load import load_tokenizer

    with console.status(f"loading tokenizer {cfg.tokenizer}"):
        tok = load_tokenizer(cfg.tokenizer)
    if preview > 0:
        show_preview(cfg, tok, preview)
        return
    from tuneforge.data.prepare import prepare

    with console.status("preparing data"):
        outcome = prepare(cfg, tok)
    out = Path(cfg.output_dir)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in outcome.splits.items())
    labels_note = f", {len(outcome.labels)} labels" if outcome.labels else ""
    console.print(f"[bold green]prepared[/] {outcome.task}{labels_note}: {sizes} -> {out}/")
    console.print(f"report: {out / 'report.md'}   manifest: {out / 'manifest.json'}")


def show_preview(cfg: PrepareConfig, tokenizer: Any, count: int) -> None:
    """Print examples as the model sees them: prompt dimmed (no loss), answer highlighted."""
    from tuneforge.data.format import render, tokenize_rendered
    from tuneforge.data.prepare import load_examples

    shown = 0
    task = None if cfg.task == "auto" else cfg.task
    for path in cfg.inputs:
        _, examples, _, _ = load_examples(path, cfg, task)
        for example in examples[: count - shown]:
            rendered = render(tokenizer, example.messages)
            tokens = tokenize_rendered(tokenizer, rendered)
            text = Text()
            cursor = 0
            for start, end in rendered.answer_spans:
                text.append(rendered.text[cursor:start], style="dim")
                text.append(rendered.text[start:end], style="bold green")
                cursor = end
            text.append(rendered.text[cursor:], style="dim")
            console.rule(f"{example.where}", align="left")
            console.print(text, soft_wrap=True)
            console.print(
                f"[dim]{len(tokens.input_ids)} tokens: {tokens.num_answer_tokens} trained "
                "(bold green), the rest masked from the loss (dim)[/]"
            )
            shown += 1
        if shown >= count:
            break
