"""Shared by tests/compare: the tiny classification task's rows and the shipped config's path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LORA_CONFIG = REPO / "configs" / "smollm2-135m" / "lora.yaml"
SYSTEM = {"role": "system", "content": "Classify the item. Answer with the label only."}
KEYWORDS = {"apple": "fruit", "carrot": "vegetable", "salmon": "fish", "oak": "tree"}


def cls_row(i: int) -> dict[str, Any]:
    word = list(KEYWORDS)[i % len(KEYWORDS)]
    text = f"What is {word}? item {i}"
    return {
        "messages": [
            SYSTEM,
            {"role": "user", "content": text},
            {"role": "assistant", "content": KEYWORDS[word]},
        ],
        "label": KEYWORDS[word],
        "text": text,
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
