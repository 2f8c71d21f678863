"""Did fine-tuning wreck general abilities? A small golden set, scored for base and tuned.

`data/forgetting.jsonl` (see data/README.md): 50 short arithmetic, fact and instruction prompts,
each with acceptable answers; an output counts as correct if any answer appears in it
(lowercased). Each prompt is sent as a single user turn with the run's chat template, decoded
greedily for at most 24 new tokens. The base and tuned scores are comparable with each other,
not with published benchmarks: the set is deliberately tiny and coarse.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

MAX_NEW_TOKENS = 24


def load_golden_set() -> list[dict[str, Any]]:
    text = resources.files("tuneforge.eval").joinpath("data/forgetting.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def is_correct(output: str, answers: list[str]) -> bool:
    lowered = output.lower()
    return any(answer.lower() in lowered for answer in answers)


def forgetting_score(predictor: Any, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """{"score", "n", "correct": [ids]} for the model behind `predictor` (an eval Predictor)."""
    items = load_golden_set() if items is None else items
    prompts = predictor.encode([[{"role": "user", "content": item["prompt"]}] for item in items])
    outputs = predictor.generate(prompts, MAX_NEW_TOKENS)
    correct = [
        item["id"]
        for item, out in zip(items, outputs, strict=True)
        if is_correct(out.text, item["answers"])
    ]
    return {
        "score": len(correct) / len(items) if items else 0.0,
        "n": len(items),
        "correct": correct,
    }


def compare(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """The report's `forgetting` entry: scores, and which items the fine-tune lost or gained."""
    base_ok, tuned_ok = set(base["correct"]), set(tuned["correct"])
    return {
        "base": {"score": base["score"], "n": base["n"]},
        "tuned": {"score": tuned["score"], "n": tuned["n"]},
        "lost": sorted(base_ok - tuned_ok),
        "gained": sorted(tuned_ok - base_ok),
    }
