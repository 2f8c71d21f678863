"""The inputs of `tuneforge eval`, read and checked before anything loads: the `Plan`.

A bad run directory, test file, prompts file, baseline name or output directory raises
TuneforgeError here, so no model is loaded and nothing is written for an evaluation that
cannot finish.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.eval import baselines as bl
from tuneforge.fsutil import check_output_dir
from tuneforge.models.trained import RunDir, inspect_run

Row = dict[str, Any]
Messages = list[dict[str, str]]


def default_out_dir(run_dir: str | Path) -> Path:
    """Where `tuneforge eval` writes when no -o is given: RUN_DIR/eval."""
    return Path(run_dir) / "eval"


@dataclass
class Plan:
    """One evaluation, checked: the run, its test rows and gold answers, the baselines to run
    (and the training rows they draw on), the side-by-side prompts, the output directory.
    `notes` collects what was skipped, for the report."""

    run: RunDir
    data_path: Path
    rows: list[Row]
    gold: list[str]
    baselines: list[str]
    train_rows: list[Row]
    prompts: list[Messages]
    prompt_texts: list[str]
    out_dir: Path
    notes: list[str] = field(default_factory=list)


def _read_test_rows(path: Path, run: RunDir) -> tuple[list[Row], list[str]]:
    from tuneforge.train.data import read_split

    if not path.is_file():
        raise TuneforgeError(f"--data {path}: no such file")
    rows = read_split(path)
    if not rows:
        raise TuneforgeError(f"--data {path}: no examples in the file")
    if run.labels is None:
        return rows, [row["messages"][-1]["content"] for row in rows]
    missing = [n for n, row in enumerate(rows, start=1) if not isinstance(row.get("label"), str)]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise TuneforgeError(
            f"{path}: {len(missing)} example(s) have no 'label' field (examples {shown}), but "
            f"{run.path} is a classification run; evaluate it on a `tuneforge prepare` test.jsonl "
            "of text+label data"
        )
    gold = [row["label"] for row in rows]
    unknown = sorted(set(gold) - set(run.labels))
    if unknown:
        raise TuneforgeError(
            f"{path}: label(s) not in the run's label set: {', '.join(map(repr, unknown[:10]))}"
            + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
            + f"; the run was trained on: {', '.join(run.labels[:20])}"
            + (" ..." if len(run.labels) > 20 else "")
        )
    return rows, gold


def _shared_system(rows: Sequence[Row]) -> str | None:
    systems = {
        row["messages"][0]["content"] if row["messages"][0].get("role") == "system" else None
        for row in rows
    }
    return systems.pop() if len(systems) == 1 else None


def _read_prompts(path: Path, system: str | None) -> tuple[list[Messages], list[str]]:
    """A prompts file: one prompt per line (plain text, or JSON {"prompt"} / {"messages"})."""
    if not path.is_file():
        raise TuneforgeError(f"--prompts {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TuneforgeError(f"--prompts {path}: not UTF-8 text") from None
    conversations, texts = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        value: Any = line
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = getattr(exc, "msg", "nested too deeply")
                raise TuneforgeError(f"{path}:{number}: malformed JSON ({reason})") from None
        if isinstance(value, dict) and isinstance(value.get("messages"), list):
            messages = value["messages"]
            if messages and messages[-1].get("role") == "assistant":
                messages = messages[:-1]
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        elif isinstance(value, dict) and isinstance(value.get("prompt"), str):
            text = value["prompt"]
            messages = [{"role": "user", "content": text}]
        elif isinstance(value, str):
            text = value.strip()
            messages = [{"role": "user", "content": text}]
        else:
            raise TuneforgeError(
                f"{path}:{number}: expected plain text, or JSON with 'prompt' or 'messages'"
            )
        if system and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": system}, *messages]
        conversations.append(messages)
        texts.append(text)
    if not conversations:
        raise TuneforgeError(f"--prompts {path}: no prompts in the file")
    return conversations, texts


def make_plan(
    run_dir: str | Path,
    data_path: str | Path | None,
    out_dir: str | Path | None,
    baselines: Sequence[str],
    shots: int,
    prompts_file: str | Path | None,
    scoring: str,
    force: bool,
    limit: int | None,
) -> Plan:
    """Check every input of `evaluate` and read the data; raises TuneforgeError on the first
    problem, before any model loads."""
    from tuneforge.eval.predict import resolve_scoring
    from tuneforge.train.data import read_split

    run = inspect_run(run_dir)
    resolve_scoring(scoring, 1)  # checks the name
    unknown = [name for name in baselines if name not in bl.ALL_BASELINES]
    if unknown:
        raise TuneforgeError(f"unknown baseline(s): {', '.join(unknown)}")
    notes: list[str] = []
    names = list(dict.fromkeys(baselines))
    if run.task == "generation" and "classic" in names:
        names.remove("classic")
        notes.append("classic baseline: classification runs only; skipped")
    data_path = run.test_file(data_path, "to evaluate on")
    rows, gold = _read_test_rows(data_path, run)
    if limit is not None:
        if limit < 1:
            raise TuneforgeError(f"--limit must be at least 1 (got {limit})")
        keep = sample_indices(len(rows), limit)
        rows, gold = [rows[i] for i in keep], [gold[i] for i in keep]
    needs_train = [name for name in names if name in ("fewshot", "rag", "classic")]
    train_rows: list[Row] = []
    if needs_train:
        if {"fewshot", "rag"} & set(needs_train) and shots < 1:
            raise TuneforgeError(f"--shots must be at least 1 for fewshot/rag (got {shots})")
        train_path = run.data_dir / "train.jsonl" if run.data_dir is not None else None
        if train_path is None or not train_path.is_file():
            raise TuneforgeError(
                f"baselines {', '.join(needs_train)} need the run's training split, but "
                f"{Path(run.config.data.dir or '?') / 'train.jsonl'} is missing (config data.dir); "
                "restore it, or choose --baselines zero (or none)"
            )
        train_rows = read_split(train_path)
        if run.labels is not None:
            train_rows = [row for row in train_rows if isinstance(row.get("label"), str)]
        if not train_rows:
            raise TuneforgeError(f"{train_path}: no usable training examples for the baselines")
    prompts: list[Messages] = []
    prompt_texts: list[str] = []
    if prompts_file is not None:
        prompts, prompt_texts = _read_prompts(Path(prompts_file), _shared_system(rows))
    out = Path(out_dir) if out_dir is not None else default_out_dir(run.path)
    read = [run.path, data_path, *([prompts_file] if prompts_file is not None else [])]
    check_output_dir(out, overwrite=force, inputs=read)
    return Plan(
        run, Path(data_path), rows, gold, names, train_rows, prompts, prompt_texts, out, notes
    )


def sample_indices(n: int, limit: int, seed: int = 0) -> list[int]:
    """`limit` of `n` row indices, a seeded random sample kept in file order.

    Not the first `limit` rows: test files are often grouped by label, and their head would
    hold a handful of classes.
    """
    if limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))
