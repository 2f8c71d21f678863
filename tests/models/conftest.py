"""Fixtures for tests/models: tiny models (built in-process) and an isolated model cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(isolated_cache):
    """Every test here gets its own cache (fixture in tests/conftest.py)."""


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """Tiny llama (ChatML template, no pad token) as an HF directory. Do not modify it."""
    from tuneforge.models.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory) -> Path:
    """Tiny Gemma 3 (turn tokens in the vocabulary, no chat template, no pad token)."""
    from tuneforge.models.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-gemma"), "gemma")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A float32 tiny llama GGUF; the HF model it was written from is at `<path>.hf/`."""
    from tuneforge.export.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture
def fresh_tokenizer(tiny_llama_dir):
    """A new (mutable) copy of the tiny llama tokenizer for each call."""
    from transformers import AutoTokenizer

    return lambda directory=tiny_llama_dir: AutoTokenizer.from_pretrained(directory)
