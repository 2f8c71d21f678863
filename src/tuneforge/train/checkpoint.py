"""Atomic, resumable checkpoints: trainable weights, optimizer, scheduler, RNG and data position.

Layout: RUN/checkpoints/step-00000120/{trainable.safetensors, optimizer.pt, scheduler.pt,
rng.pt, state.json}, plus rng-rank{N}.pt for each further process of a data-parallel run (only
the main process writes; the others' RNG states are gathered to it). Each is written to a hidden temp directory and renamed, so a process killed
mid-write (SIGKILL included) leaves either a complete checkpoint or none; leftovers are swept.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneforge.errors import TuneforgeError

PREFIX = "step-"


@dataclass
class TrainState:
    """Where training is: enough to continue exactly where it stopped."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed (all processes)
    examples_seen: int = 0
    tokens_seen: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    elapsed_seconds: float = 0.0
    train_loss: float | None = None  # of the last step, so resuming a finished run reports it
    world_size: int = 1  # processes that trained up to here
    global_batch: int | None = None  # examples per optimizer step, over all processes


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    found = [p for p in found if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().to("cpu").contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: TrainState,
    keep_last: int,
    other_ranks_rng: list[dict[str, Any]] | None = None,
) -> Path:
    from safetensors.torch import save_file

    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    for rank, rng in enumerate(other_ranks_rng or [], start=1):
        torch.save(rng, tmp / f"rng-rank{rank}.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    prune(run_dir, keep_last, state.best_step)
    return final


def prune(run_dir: Path, keep_last: int, best_step: int | None) -> None:
    """Keep the newest `keep_last` checkpoints and the best one; drop temp leftovers."""
    root = checkpoint_dir(run_dir)
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    complete = list_checkpoints(run_dir)
    keep = set(complete[-keep_last:])
    if best_step is not None:
        keep.add(root / f"{PREFIX}{best_step:08d}")
    for path in complete:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)


def load_trainable(model: torch.nn.Module, path: Path) -> None:
    """Load trainable weights saved by `save_checkpoint` (a checkpoint dir or the file)."""
    from safetensors.torch import load_file

    file = path / "trainable.safetensors" if path.is_dir() else path
    weights = load_file(str(file))
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise TuneforgeError(
            f"{file}: weights {missing[:3]} do not match this model; was the config changed?"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    rank: int = 0,
    seed: int = 0,
) -> TrainState:
    """Restore everything `save_checkpoint` wrote; returns the saved TrainState.

    Process `rank` takes its own RNG state. A rank the saved run did not have (resumed on more
    processes) gets a fresh stream seeded from (seed, rank, step): deterministic, and distinct
    from every other rank's.
    """
    load_trainable(model, path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    state = TrainState(**json.loads((path / "state.json").read_text()))
    rng = path / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt")
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    else:
        from accelerate.utils import set_seed

        set_seed(seed + 1_000_003 * rank + state.step)
    return state
