"""Measure training speed here: a few real optimizer steps of the configured run.

The probe loads the model and method exactly as `tuneforge train` does and runs the real
training loop (`train_loop`) for `warmup + steps` steps on the configured data, into a temporary
directory that is deleted afterwards. Only the steps after the warm-up are timed (the first
step pays for lazy initialisation and allocator growth).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import TrackingConfig, TrainConfig
from tuneforge.errors import TuneforgeError


@dataclass(frozen=True)
class ProbeResult:
    device: str
    steps_timed: int
    examples_timed: int
    seconds_timed: float
    load_seconds: float
    warmup_seconds: float
    """The warm-up step(s): a real run pays this once too (lazy initialisation)."""
    warmup_examples: int
    peak_rss_bytes: int
    """The probe process's own peak RSS (model, a few steps), for reference."""

    @property
    def seconds_per_example(self) -> float:
        return self.seconds_timed / self.examples_timed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds_per_example": self.seconds_per_example}


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        from tuneforge.train.run import peak_memory_bytes

        return peak_memory_bytes()["rss"]


def probe(
    cfg: TrainConfig,
    *,
    steps: int = 3,
    warmup: int = 1,
    log: Callable[[str], None] = print,
) -> ProbeResult:
    """Time `steps` training steps (after `warmup`) of `cfg` on this machine."""
    from accelerate.utils import set_seed

    from tuneforge.models.cache import cache_root
    from tuneforge.train.data import load_tokenized
    from tuneforge.train.loop import train_loop
    from tuneforge.train.run import (
        check_data_dir,
        load_for_training,
        make_accelerator,
        peak_memory_bytes,
    )

    if steps < 1 or warmup < 0:
        raise TuneforgeError(f"--probe-steps must be at least 1 (got {steps})")
    data_dir = check_data_dir(cfg)
    probe_cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={
                    "max_steps": warmup + steps,
                    "eval_every": None,
                    "save_every": None,
                    "early_stopping_patience": None,
                }
            ),
            "tracking": TrackingConfig(tensorboard=False),
        }
    )
    accelerator = make_accelerator(probe_cfg)
    set_seed(cfg.train.seed)
    started = time.perf_counter()
    model, tokenizer, _ = load_for_training(cfg, str(accelerator.device))
    load_seconds = time.perf_counter() - started
    split = load_tokenized(
        data_dir / "train.jsonl", tokenizer, cfg.model.max_seq_len, cache_root() / "tokenized"
    )
    if len(split) == 0:
        raise TuneforgeError(f"{data_dir / 'train.jsonl'}: no example to train on")
    per_step = min(len(split), cfg.train.batch_size * cfg.train.grad_accum)
    stamps: list[float] = []

    def on_step(_: dict[str, Any]) -> None:
        if accelerator.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    log(f"probe: {warmup} warm-up + {steps} timed steps of {per_step} examples")
    first = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuneforge-probe-") as tmp:
        train_loop(probe_cfg, Path(tmp), model, tokenizer, accelerator, split, None, None, on_step)
    # Steps after the warm-up: from the end of step `warmup` to the end of the last one.
    begin = stamps[warmup - 1] if warmup > 0 else first
    timed = len(stamps) - warmup
    peak = peak_memory_bytes()
    return ProbeResult(
        device=str(accelerator.device),
        steps_timed=timed,
        examples_timed=timed * per_step,
        seconds_timed=stamps[-1] - begin,
        load_seconds=round(load_seconds, 3),
        warmup_seconds=begin - first,
        warmup_examples=warmup * per_step,
        peak_rss_bytes=peak.get("cuda_allocated", peak["rss"]),
    )
