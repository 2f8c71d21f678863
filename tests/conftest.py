"""Shared fixtures: tiny models built in-process (no downloads), paths to shared data."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BANKING77 = REPO.parent / "shared" / "data" / "banking77" / "train.csv"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny llama-architecture causal LM with a ChatML template, saved as an HF directory."""
    from tuneforge.models.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="session")
def banking77_csv() -> Path:
    if not BANKING77.is_file():
        pytest.skip(f"{BANKING77} not present")
    return BANKING77
