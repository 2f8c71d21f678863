"""Shared by tests/compare: the shipped LoRA config's path."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LORA_CONFIG = REPO / "configs" / "smollm2-135m" / "lora.yaml"
