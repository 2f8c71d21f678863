"""Tolerant readers of the files a run directory holds.

Each returns None (or skips a bad line) instead of raising, and appends a note saying what was
wrong: the dashboard shows the note and goes on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def read_json(path: Path, notes: list[str]) -> Any:
    """The JSON in `path`, or None (absent, or unreadable: a note says why)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path.parent.name}/{path.name}: unreadable ({short_error(exc)})")
        return None


def read_yaml(path: Path, notes: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(parsed mapping or None, raw text or None) of a YAML file."""
    if not path.is_file():
        return None, None
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        notes.append(f"{path.name}: unreadable ({short_error(exc)})")
        return None, None
    if not isinstance(data, dict):
        notes.append(f"{path.name}: not a mapping")
        return None, text
    return data, text


def short_error(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def get_in(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


@dataclass
class Curves:
    """metrics.jsonl as (step, value) series."""

    train_loss: list[tuple[float, float]] = field(default_factory=list)
    val_loss: list[tuple[float, float]] = field(default_factory=list)
    lr: list[tuple[float, float]] = field(default_factory=list)
    examples_per_s: list[tuple[float, float]] = field(default_factory=list)
    records: int = 0


_CURVE_KEYS = {
    "train/loss": "train_loss",
    "val/loss": "val_loss",
    "train/lr": "lr",
    "train/examples_per_s": "examples_per_s",
}
_curve_cache: dict[tuple[str, int, int], Curves] = {}


def read_curves(path: Path, notes: list[str]) -> Curves | None:
    """The curves in metrics.jsonl; bad lines are skipped and counted in a note.

    A training in progress may be mid-way through writing its last line, so a bad line does
    not void the file. Parsed files are cached by (path, mtime, size): the runs list reads every
    run's metrics on each load.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key in _curve_cache:
        return _curve_cache[key]
    curves = Curves()
    bad = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        notes.append(f"metrics.jsonl: unreadable ({short_error(exc)})")
        return None
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        step = as_float(record.get("step")) if isinstance(record, dict) else None
        if step is None:
            bad += 1
            continue
        curves.records += 1
        for source, target in _CURVE_KEYS.items():
            value = as_float(record.get(source))
            if value is not None:
                getattr(curves, target).append((step, value))
    if bad:
        notes.append(f"metrics.jsonl: {bad} malformed line(s) skipped")
    if len(_curve_cache) > 512:
        _curve_cache.clear()
    _curve_cache[key] = curves
    return curves
