"""Fixtures for tests/compare: a tiny classification task, overrides onto the tiny model, and an
in-process trainer that records its calls (the real one starts a process per variant)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyword_task import LABELS, cls_row, write_jsonl


@pytest.fixture(autouse=True)
def _isolated(one_torch_thread, isolated_cache):
    """One torch thread and the test's own cache (fixtures in tests/conftest.py)."""


@pytest.fixture(scope="session")
def cls_data(tmp_path_factory) -> Path:
    """A prepared-looking classification dir: 24 train, 8 val, 12 test rows, 4 labels."""
    root = tmp_path_factory.mktemp("cls-data")
    write_jsonl(root / "train.jsonl", [cls_row(i) for i in range(24)])
    write_jsonl(root / "val.jsonl", [cls_row(i) for i in range(50, 58)])
    write_jsonl(root / "test.jsonl", [cls_row(i) for i in range(100, 112)])
    (root / "labels.json").write_text(json.dumps(LABELS))
    return root


@pytest.fixture
def overrides(tiny_model_dir, cls_data) -> list[str]:
    """The shipped LoRA config made tiny: 2 steps of 8 on the tiny model, no TensorBoard."""
    return [
        f"model.name={tiny_model_dir}",
        f"data.dir={cls_data}",
        "tracking.tensorboard=false",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.lr=1e-2",
        "train.warmup_ratio=0",
    ]


@pytest.fixture
def trainer_calls() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def inprocess_trainer(trainer_calls) -> Callable[..., int]:
    """A `Trainer` that runs `tuneforge.train.run.train` here and records (variant, mode)."""
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.train.run import train

    def trainer(config: Path, run_dir: Path, mode: str, log_file: Path, log: Any) -> int:
        trainer_calls.append((run_dir.name, mode))
        cfg = resolve(TrainConfig, config)
        train(cfg, run_dir, resume=mode == "resume", force=mode == "force", log=lambda _: None)
        return 0

    return trainer
