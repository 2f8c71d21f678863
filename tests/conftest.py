"""Shared fixtures: tiny models built in-process (no downloads), paths to shared data."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BANKING77 = REPO.parent / "shared" / "data" / "banking77" / "train.csv"


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: tiny models run far faster than on one per core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """The test's own TUNEFORGE_CACHE, so it never reads or writes ~/.cache/tuneforge."""
    root = tmp_path / "tf-cache"
    monkeypatch.setenv("TUNEFORGE_CACHE", str(root))
    return root


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
