"""The tiny keyword task the tests train and evaluate on: "What is apple? item 3" -> "fruit".

Four labels a tiny model learns in a few steps. Importable from any test module (pytest puts
`tests/` on the path for its root conftest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = "Classify the item. Answer with the label only."
KEYWORDS = {"apple": "fruit", "carrot": "vegetable", "salmon": "fish", "oak": "tree"}
LABELS = sorted(set(KEYWORDS.values()))


def cls_row(i: int, *, varied_length: bool = False) -> dict[str, Any]:
    """Classification row `i`; `varied_length` appends 0-2 " please" so batches need padding."""
    word = list(KEYWORDS)[i % len(KEYWORDS)]
    text = f"What is {word}? item {i}" + (" please" * (i % 3) if varied_length else "")
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": KEYWORDS[word]},
        ],
        "label": KEYWORDS[word],
        "text": text,
    }


def gen_row(i: int, *, system: str | None = None) -> dict[str, Any]:
    """Generation row `i`: a JSON object describing the keyword."""
    word = list(KEYWORDS)[i % len(KEYWORDS)]
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": f"Describe {word} {i}"},
        {"role": "assistant", "content": json.dumps({"name": word, "kind": KEYWORDS[word]})},
    ]
    return {"messages": messages}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_split(directory: Path, task: str, *, gen_system: str | None = None) -> Path:
    """A data dir of the task: 24 train and 12 test rows (+ labels.json for classification).

    Classification rows vary in length; `gen_system` is the generation rows' system prompt.
    """
    if task == "classification":
        rows = [cls_row(i, varied_length=True) for i in [*range(24), *range(100, 112)]]
    else:
        rows = [gen_row(i, system=gen_system) for i in [*range(24), *range(100, 112)]]
    write_jsonl(directory / "train.jsonl", rows[:24])
    write_jsonl(directory / "test.jsonl", rows[24:])
    if task == "classification":
        (directory / "labels.json").write_text(json.dumps(LABELS))
    return directory


def train_tiny_run(run: Path, model_dir: Path, data_dir: Path, *overrides: str) -> Path:
    """A real `tuneforge train` run into `run`: LoRA, 4 steps of 8 at lr 1e-2 (the adapter
    really moves the logits), no warmup, no TensorBoard; `overrides` (key=value) come last and
    win."""
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.train.run import train

    cfg = resolve(
        TrainConfig,
        None,
        [
            f"model.name={model_dir}",
            f"data.dir={data_dir}",
            "method.kind=lora",
            "tracking.tensorboard=false",
            "train.max_steps=4",
            "train.batch_size=8",
            "train.lr=1e-2",
            "train.warmup_ratio=0",
            *overrides,
        ],
    )
    train(cfg, run, log=lambda _: None)
    return run
