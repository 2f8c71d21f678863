"""The demo datasets shipped in the package (written by the tuneforge developers)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SUPPORT_INTENTS = "support_intents.csv"
EXTRACTION = "extraction.jsonl"


def demo_path(name: str = SUPPORT_INTENTS) -> Path:
    """Path of a shipped demo file (support_intents.csv, extraction.jsonl)."""
    return Path(str(files("tuneforge.data").joinpath("demo", name)))
