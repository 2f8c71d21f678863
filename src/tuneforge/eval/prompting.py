"""How far prompting the base model gets on a prepared classification dataset, before training.

The question a user asks before spending compute on a fine-tune: `tuneforge eval` answers it
afterwards, side by side with the tuned model; this answers it up front from a `prepare`
output alone (zero-shot and few-shot prompts, the same construction as eval's baselines).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import TuneforgeError

PROMPT_KINDS = ("zero", "fewshot")


@dataclass(frozen=True)
class PromptingScore:
    name: str
    accuracy: float
    accuracy_ci: tuple[float, float]
    prompt_tokens: float
    seconds: float
    n: int


def read_classification_split(data_dir: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(train rows, test rows, labels) of a `prepare` output for a classification dataset."""
    from tuneforge.train.data import read_split

    labels_file = data_dir / "labels.json"
    if not labels_file.is_file():
        raise TuneforgeError(
            f"{data_dir}: no labels.json; prompting baselines need a classification dataset"
        )
    labels = json.loads(labels_file.read_text(encoding="utf-8"))
    train = [
        row for row in read_split(data_dir / "train.jsonl") if isinstance(row.get("label"), str)
    ]
    test = [row for row in read_split(data_dir / "test.jsonl") if isinstance(row.get("label"), str)]
    if not train or not test:
        raise TuneforgeError(f"{data_dir}: needs labelled train.jsonl and test.jsonl rows")
    return train, test, labels


def score_prompting(
    model: Any,
    tokenizer: Any,
    train: Sequence[dict],
    test: Sequence[dict],
    labels: Sequence[str],
    *,
    kinds: Sequence[str] = PROMPT_KINDS,
    shots: int = 8,
    seed: int = 0,
    batch_size: int = 16,
) -> list[PromptingScore]:
    """Accuracy (95 % bootstrap CI) of the base model prompted zero-shot and few-shot.

    Prompts are built and predictions scored over the label set (always a valid label) by
    eval's own runner, exactly as `tuneforge eval` does for its baselines.
    """
    from tuneforge.eval.runner import Runner, conversations_for
    from tuneforge.eval.stats import bootstrap_ci

    unknown = [kind for kind in kinds if kind not in PROMPT_KINDS]
    if unknown:
        raise TuneforgeError(f"prompting kinds: unknown {unknown}; choose from {PROMPT_KINDS}")
    gold = [row["label"] for row in test]
    runner = Runner(tokenizer, labels, test[0]["messages"][:-1], gold, batch_size=batch_size)
    scores = []
    for kind in kinds:
        conversations = conversations_for(kind, test, labels, train, shots, seed)
        # No free generation: only the label-set accuracy is reported here.
        variant = runner.run(f"base_{kind}", model, conversations, free_generation=False)
        correct = np.array([p == g for p, g in zip(variant.pred, gold, strict=True)])
        assert variant.prompt_tokens is not None
        scores.append(
            PromptingScore(
                variant.name,
                float(correct.mean()),
                bootstrap_ci(correct.astype(float)),
                variant.prompt_tokens,
                variant.seconds,
                len(test),
            )
        )
    return scores
