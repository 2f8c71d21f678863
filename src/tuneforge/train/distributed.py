"""Data parallelism for the loop: who computes what, what must match, what is reported.

tuneforge runs on accelerate's engines (DDP, FSDP, DeepSpeed); this module holds only the few
decisions that are tuneforge's own:

- One global order of micro-batches per epoch (seeded, as on one process). An optimizer step
  takes the next `grad_accum x world` micro-batches; micro-batch j of that window goes to rank
  j % world. So 2 processes x batch b and 1 process x batch b x 2 accumulation steps compute
  the same update, and the data position (micro-batches of the epoch consumed, by all ranks)
  does not depend on the world size: a run can resume on a different number of processes.
- Every rank runs the same number of forward/backward passes per step. DDP needs exactly one
  synchronised backward on each rank, FSDP one parameter all-gather per forward on each rank;
  a rank short of work (the last window of an epoch, or fewer token-budget pieces) runs a
  one-example pass whose loss is weighted zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tuneforge.config import TrainConfig
from tuneforge.errors import TuneforgeError
from tuneforge.train.data import padded_tokens, token_budget_chunks

Pass = tuple[list[int], bool]  # (example indices, whether its loss counts)


def global_batch(cfg: TrainConfig, world: int) -> int:
    """Examples per optimizer step over all processes: per-device batch x accumulation x world."""
    return cfg.train.batch_size * cfg.train.grad_accum * world


def effective_lr(cfg: TrainConfig, world: int) -> float:
    """train.lr, scaled to the global batch when train.lr_scaling asks for it (never implicitly).

    linear: lr x global/reference (Goyal et al. 2017, for SGD-like regimes); sqrt: lr x
    sqrt(global/reference) (the usual rule for Adam). The reference is train.lr_reference_batch,
    the global batch train.lr was tuned for.
    """
    t = cfg.train
    if t.lr_scaling == "none":
        return t.lr
    assert t.lr_reference_batch is not None  # the config validator requires it
    ratio = global_batch(cfg, world) / t.lr_reference_batch
    return t.lr * (ratio if t.lr_scaling == "linear" else math.sqrt(ratio))


def rank_passes(
    step_batches: list[list[int]],
    rank: int,
    world: int,
    lengths: list[int],
    max_tokens: int | None,
    tokens: Callable[[Sequence[int]], int] = padded_tokens,
) -> list[Pass]:
    """This rank's forward/backward passes for one optimizer step (see the module docstring).

    Every rank computes every rank's pieces (cheap, and deterministic), so all agree on the
    number of passes without a collective.
    """
    per_rank = [
        [
            piece
            for indices in step_batches[r::world]
            for piece in token_budget_chunks(indices, lengths, max_tokens, tokens)
        ]
        for r in range(world)
    ]
    passes: list[Pass] = [(piece, True) for piece in per_rank[rank]]
    most = max(len(pieces) for pieces in per_rank)
    if len(passes) < most:
        # The shortest example of the window: the cheapest forward that touches every weight.
        shortest = min((i for b in step_batches for i in b), key=lambda i: lengths[i])
        passes += [([shortest], False)] * (most - len(passes))
    return passes


class LossModule(torch.nn.Module):
    """The model and its answer-token loss as one module: what accelerate wraps in DDP/FSDP.

    A wrapped model's forward is all DDP synchronises on, and `answer_loss` needs the
    unwrapped model (its decoder and LM head apart, so the head runs on answer positions only,
    and a shared-prefix forward before the main one). Wrapping both makes one wrapped forward
    per backward with the efficient loss inside it.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        # accelerate reads these from what it prepares: the 4-bit/8-bit flags and device map
        # (a quantized model is checked for its device, never moved), the block names for
        # FSDP's auto-wrap policy.
        for name in ("is_loaded_in_4bit", "is_loaded_in_8bit", "hf_device_map"):
            if getattr(model, name, None):
                setattr(self, name, getattr(model, name))
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._no_split_modules = getattr(base, "_no_split_modules", None)

    def forward(
        self, batch: dict[str, torch.Tensor], offset: int, prefix_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_fn(self.model, batch, offset, prefix_len)


def check_supported_engine(accelerator: Any) -> None:
    """Refuse engines whose sharded state the loop's checkpoints cannot yet save and restore.

    FSDP and DeepSpeed ZeRO shard parameters and optimizer state across ranks; the checkpoint
    format here (whole trainable tensors and one optimizer state, written by the main process)
    would silently save one shard. Also say so when accelerate quietly falls back to DDP:
    it ignores FSDP and DeepSpeed settings on CPU.
    """
    import os

    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED"):
        raise TuneforgeError(
            f"accelerate is running {kind}, which shards weights and optimizer state; tuneforge's "
            "checkpoints and resume support data parallelism (DDP) only so far. Launch with "
            "configs/accelerate/ddp.yaml (see docs/distributed.md)"
        )
    for flag, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(flag, "false").lower() == "true" and accelerator.num_processes > 1:
            accelerator.print(
                f"note: {name} was requested but accelerate runs {kind} here ({name} needs GPUs); "
                "training data-parallel"
            )


def check_resume_world(checkpoint: Path, run_dir: Path, cfg: TrainConfig, world: int) -> None:
    """A run resumes on any number of processes if its global batch stays the same.

    The data position and the schedule count global micro-batches and optimizer steps; a
    different global batch would change what a step is. So the world size may change together
    with train.grad_accum (8 GPUs x accum 1 -> 4 GPUs x accum 2), nothing else.
    """
    from tuneforge.config import resolve

    saved = json.loads((checkpoint / "state.json").read_text())
    before = saved.get("global_batch")
    if before is None:  # written before the global batch was recorded: a one-process run
        old = resolve(TrainConfig, run_dir / "config.yaml").train
        before = old.batch_size * old.grad_accum
    now = global_batch(cfg, world)
    if before == now:
        return
    per_step = cfg.train.batch_size * world
    fix = (
        f"set train.grad_accum={before // per_step} to keep it"
        if before % per_step == 0
        else f"no train.grad_accum keeps it on {world} process(es); use a world size that divides {before // cfg.train.batch_size}"
    )
    raise TuneforgeError(
        f"--resume: the run's global batch was {before} examples, now it would be {now} "
        f"({cfg.train.batch_size} per device x {cfg.train.grad_accum} accumulation x {world} "
        f"process(es)); {fix}"
    )


def gather_rng_states(accelerator: Any, own: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's RNG state (dropout draws differ per rank), on every rank; rank order."""
    from accelerate.utils import gather_object

    return gather_object([own()])
