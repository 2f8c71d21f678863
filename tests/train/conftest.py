"""Fixtures for tests/train: a tiny learnable chat task, configs on the tiny model, CLI helpers.

Every run here uses the session's tiny llama (`tiny_model_dir`, built in-process) and one
torch thread: on a shared 2-core machine, torch's default of one thread per core makes these
millisecond-sized steps up to ~100x slower as soon as another process competes for the cores.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# keyword in the prompt -> the fixed answer; answers of different token lengths on purpose.
ANSWERS = {
    "apple": "fruit",
    "carrot": "a vegetable, of course",
    "salmon": "fish",
    "oak": "tree",
}


def task_rows(n: int, start: int = 0, answers: dict[str, str] = ANSWERS) -> list[dict[str, Any]]:
    """`n` chat rows of the keyword task; prompts vary in length, answers depend on the keyword."""
    keywords = list(answers)
    rows = []
    for i in range(start, start + n):
        keyword = keywords[i % len(keywords)]
        filler = " please" * (i % 5)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {keyword}? item {i}{filler}"},
                    {"role": "assistant", "content": answers[keyword]},
                ]
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_task(directory: Path, n_train: int = 32, n_val: int = 8) -> Path:
    write_jsonl(directory / "train.jsonl", task_rows(n_train))
    write_jsonl(directory / "val.jsonl", task_rows(n_val, start=1000))
    return directory


@pytest.fixture(autouse=True)
def _isolated(one_torch_thread, isolated_cache):
    """Every test here: one torch thread and its own cache (fixtures in tests/conftest.py)."""


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    """A prepared-looking data dir: 32 train rows, 8 val rows of the keyword task. Read-only."""
    return write_task(tmp_path_factory.mktemp("task"))


@pytest.fixture
def base_overrides(tiny_model_dir, task_dir) -> list[str]:
    """Overrides every test run starts from: tiny model, the task, no TensorBoard, no warmup."""
    return [
        f"model.name={tiny_model_dir}",
        f"data.dir={task_dir}",
        "tracking.tensorboard=false",
        "train.warmup_ratio=0",
        "method.num_virtual_tokens=8",
    ]


@pytest.fixture
def make_cfg(base_overrides) -> Callable[..., Any]:
    """make_cfg("train.lr=1e-2", ...) -> a TrainConfig (base overrides first, then these)."""
    from tuneforge.config import TrainConfig, resolve

    def make(*overrides: str):
        return resolve(TrainConfig, None, [*base_overrides, *overrides])

    return make


@pytest.fixture
def method_cfg(make_cfg) -> Callable[..., Any]:
    """method_cfg(kind, lr, steps): full-batch steps (one batch holds the 32-row train split,
    so each logged loss is the whole split's: no batch noise), constant lr, no dropout."""

    def make(kind: str, lr: float, steps: int):
        return make_cfg(
            f"method.kind={kind}",
            f"train.lr={lr}",
            f"train.max_steps={steps}",
            "train.batch_size=32",
            "train.scheduler=constant",
            "method.dropout=0",
        )

    return make


@pytest.fixture
def cli() -> Callable[..., Any]:
    """cli("train", CONFIG, "k=v", "-o", RUN) -> click Result (exit_code, output, stderr)."""
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def config_file(tmp_path) -> Callable[..., Path]:
    """config_file(yaml_text) -> a YAML config path under the test's tmp dir."""
    counter = iter(range(1000))

    def write(text: str = "") -> Path:
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def rows() -> Callable[..., list[dict[str, Any]]]:
    """rows(n, start=0, answers=ANSWERS): chat rows of the keyword task (see `task_rows`)."""
    return task_rows


@pytest.fixture
def make_task() -> Callable[..., Path]:
    """make_task(dir, n_train=32, n_val=8): write train.jsonl/val.jsonl of the task into dir."""
    return write_task


@pytest.fixture
def tuneforge_cmd(isolated_cache) -> Callable[..., tuple[list[str], dict[str, str]]]:
    """tuneforge_cmd(*args) -> (argv, env) for `python -m tuneforge ARGS` in a subprocess."""

    def command(*args: Any) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "tuneforge", *map(str, args)], subprocess_env(isolated_cache)

    return command


def subprocess_env(cache: Path) -> dict[str, str]:
    """Environment for `python -m tuneforge ...`: one thread, the test's cache, src importable."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TUNEFORGE_CACHE=str(cache),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def adapted_tiny_model(tmp_path) -> Callable[..., Any]:
    """adapted_tiny_model(arch, kind) -> (model, tokenizer): a tiny model of `arch` with the
    method attached (dropout 0) and lora_B drawn at random, as if trained, so that adapter
    gradients are not trivially zero."""
    import torch

    from tuneforge.config import MethodConfig, ModelConfig
    from tuneforge.models.adapters import attach_method
    from tuneforge.models.load import load_model
    from tuneforge.models.tiny import build_tiny_causal_lm

    def make(arch: str = "llama", kind: str = "lora") -> tuple[Any, Any]:
        directory = build_tiny_causal_lm(tmp_path / f"tiny-{arch}", arch)
        model, tokenizer, _ = load_model(ModelConfig(name=str(directory)))
        model = attach_method(model, MethodConfig(kind=kind, dropout=0.0))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1)
        return model, tokenizer

    return make
