"""Fixtures for tests/export: tiny runs (trained in-process, a few steps) and a CLI helper.

Every run trains the session's tiny llama (`tiny_model_dir`) for 4 steps at a high learning rate,
so the adapter really moves the logits (a merge that dropped it would be caught), in well under
a second. Runs are built once per session, on first use, and must not be modified by tests:
copy one (`copy_run`) to corrupt or extend it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from keyword_task import cls_row, train_tiny_run, write_split


@pytest.fixture(autouse=True)
def _isolated(one_torch_thread, isolated_cache):
    """Every test here: one torch thread and its own cache (fixtures in tests/conftest.py)."""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir) -> Callable[..., Path]:
    """tiny_run(task="classification", kind="lora", model=None) -> a finished run directory."""
    root = tmp_path_factory.mktemp("export-runs")
    built: dict[tuple[str, str, str], Path] = {}

    def make(task: str = "classification", kind: str = "lora", model: Path | None = None) -> Path:
        model = model or tiny_model_dir
        key = (task, kind, str(model))
        if key in built:
            return built[key]
        data = root / f"data-{task}"
        if not data.is_dir():
            write_split(data, task)
        run = root / f"run-{task}-{kind}-{len(built)}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TUNEFORGE_CACHE", str(root / "cache"))
            train_tiny_run(run, model, data, f"method.kind={kind}", "method.num_virtual_tokens=4")
        built[key] = run
        return run

    return make


@pytest.fixture
def copy_run(tmp_path) -> Callable[[Path], Path]:
    """copy_run(run) -> a private copy of a run directory (to corrupt or extend)."""

    def copy(run: Path) -> Path:
        target = tmp_path / f"copy-{run.name}"
        shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoints"))
        return target

    return copy


@pytest.fixture
def cli() -> Callable[..., Any]:
    """cli("RUN", "--to", "gguf", ...) -> the click Result of `tuneforge export ...`."""
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    def invoke(*args: Any):
        return CliRunner().invoke(app, ["export", *map(str, args)])

    return invoke


@pytest.fixture
def export() -> Callable[..., Any]:
    """export(run, to, out, **kwargs) -> ExportResult, quietly."""
    from tuneforge.export.run import export_run

    def run_export(run: Path, to: str, out: Path, **kwargs: Any):
        return export_run(run, to, out, log=lambda _: None, **kwargs)

    return run_export


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


@pytest.fixture
def logits() -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """logits(model, ids) -> float32 logits [batch, seq, vocab], without gradients."""
    return _logits


@pytest.fixture
def sample_ids(tiny_model_dir) -> torch.Tensor:
    """A batch of rendered chats (token ids) from the test split, for logits comparisons."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [
        tokenizer.apply_chat_template(cls_row(i, varied_length=True)["messages"], tokenize=False)
        for i in range(100, 104)
    ]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = min(len(e) for e in encoded)
    return torch.tensor([e[:width] for e in encoded])
