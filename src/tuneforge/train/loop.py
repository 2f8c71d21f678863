"""The training loop: one function, read top to bottom.

    setup (model, method, data, optimizer, schedule) -> [resume] -> for each epoch, for each
    optimizer step: forward/backward over `grad_accum` micro-batches -> guard -> clip -> step ->
    log -> validate / early-stop -> checkpoint  -> restore best -> save the run.

Loss is averaged over answer tokens across the whole accumulation window (and all processes),
so gradient accumulation and data parallelism give the same update as one big batch; how the
window is split between processes is in `tuneforge.train.distributed`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tuneforge.config import TrainConfig
from tuneforge.errors import TuneforgeError
from tuneforge.models.architecture import is_prompt_learning, sliding_window
from tuneforge.train import checkpoint as ckpt
from tuneforge.train import distributed as dist
from tuneforge.train.data import (
    Batching,
    TokenizedSplit,
    epoch_batches,
    shared_prefix_length,
    token_budget_chunks,
)
from tuneforge.train.loss import answer_loss, virtual_token_offset
from tuneforge.train.tracking import Tracker, plot_losses


class TrainingDivergedError(TuneforgeError):
    """NaN/inf loss or an exploding gradient: the run stops at the last good checkpoint."""

    exit_code = 3


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_train_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    examples_per_second: float
    wall_seconds: float


def build_optimizer(
    model: Any, cfg: TrainConfig, device: torch.device, lr: float
) -> torch.optim.Optimizer:
    """AdamW; 8-bit (paged for QLoRA) from bitsandbytes when on CUDA and asked for (or auto)."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = cfg.train.optimizer
    if kind == "auto":
        kind = "adamw"
        if device.type == "cuda" and _has_bitsandbytes():
            kind = "paged_adamw_8bit" if cfg.method.kind == "qlora" else "adamw_8bit"
    hyper = {"lr": lr, "weight_decay": cfg.train.weight_decay}
    if kind == "adamw":
        return torch.optim.AdamW(params, **hyper)
    if device.type != "cuda":
        raise TuneforgeError(f"train.optimizer={kind} needs a CUDA GPU; use adamw on CPU")
    import bitsandbytes as bnb

    optimizer_class = (
        bnb.optim.PagedAdamW8bit if kind == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    )
    return optimizer_class(params, **hyper)


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def total_steps(cfg: TrainConfig, batches_per_epoch: int, world: int) -> int:
    per_epoch = math.ceil(batches_per_epoch / (cfg.train.grad_accum * world))
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    return max(1, math.ceil(per_epoch * cfg.train.epochs))


def batching_for(model: Any, cfg: TrainConfig, split: TokenizedSplit, pad_id: int) -> Batching:
    """How `model` trains on `split`: `plan_batching` with the model's own facts."""
    return plan_batching(cfg, split, pad_id, is_prompt_learning(model), sliding_window(model))


def plan_batching(
    cfg: TrainConfig,
    split: TokenizedSplit,
    pad_id: int,
    prompt_learning: bool,
    window: int | None,
) -> Batching:
    """Packed rows where the model allows them, else padded rows; the shared prefix either way.

    Prompt and prefix tuning feed their own virtual tokens / past key-values: neither packing
    nor prefix sharing. A packed row puts several examples under one custom mask, which
    sliding-window layers (`window`) would not restrict: exact only while every example fits
    the window. Gradient checkpointing turns the model's KV cache off, which padded prefix
    sharing relies on; a packed row holds its prefix itself and needs no cache.
    """
    packed = (
        cfg.data.packing
        and not prompt_learning
        and (window is None or max(split.lengths, default=0) <= window)
    )
    share = (
        cfg.train.share_prefix
        and not prompt_learning
        and (packed or not cfg.model.gradient_checkpointing)
    )
    return Batching(
        pad_id,
        shared_prefix_length(split) if share else 0,
        packed,
        cfg.data.pad_to_multiple_of or 1,
    )


def step_autocast(accelerator: Any, cfg: TrainConfig) -> Any:
    """The forward's precision context: accelerate's (bf16 on CUDA), or bfloat16 autocast for
    train.precision=bf16 on CPU, whose frozen weights are bfloat16 already."""
    if cfg.train.precision == "bf16" and accelerator.device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return accelerator.autocast()


@torch.no_grad()
def validation_loss(
    model: Any, split: TokenizedSplit, cfg: TrainConfig, pad_id: int, accelerator: Any
) -> float:
    """Mean loss per answer token over the validation split (sharded across processes).

    `model` is the unwrapped model: no gradients, so nothing to synchronise but the sums.
    """
    model.eval()
    offset = virtual_token_offset(model)
    batching = batching_for(model, cfg, split, pad_id)
    batches = epoch_batches(split.lengths, cfg.train.batch_size, 0, 0, group_by_length=True)
    totals = torch.zeros(2, device=accelerator.device)  # [loss sum, token count]
    for indices in batches[accelerator.process_index :: accelerator.num_processes]:
        for piece in token_budget_chunks(
            indices, split.lengths, cfg.train.max_batch_tokens, batching.tokens
        ):
            batch = {k: v.to(accelerator.device) for k, v in batching.collate(split, piece).items()}
            with step_autocast(accelerator, cfg):
                loss_sum, count = answer_loss(
                    model, batch, offset, batching.cache_prefix_len, batching.multiple
                )
            totals += torch.stack([loss_sum.float(), count.float()])
    totals = accelerator.reduce(totals, reduction="sum")
    model.train()
    return (totals[0] / totals[1].clamp(min=1)).item()


def train_loop(
    cfg: TrainConfig,
    run_dir: Path,
    model: Any,
    tokenizer: Any,
    accelerator: Any,
    train_split: TokenizedSplit,
    val_split: TokenizedSplit | None,
    resume_from: Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `model` (already carrying its PEFT method) and write checkpoints into `run_dir`."""
    t = cfg.train
    world, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    pad_id = tokenizer.pad_token_id
    offset = virtual_token_offset(model)
    batching = batching_for(model, cfg, train_split, pad_id)

    # -- optimizer and schedule ---------------------------------------------------------------
    first_epoch_batches = epoch_batches(
        train_split.lengths,
        t.batch_size,
        t.seed,
        0,
        cfg.data.group_by_length,
        cfg.data.group_window,
    )
    steps = total_steps(cfg, len(first_epoch_batches), world)
    optimizer = build_optimizer(model, cfg, accelerator.device, dist.effective_lr(cfg, world))
    from transformers import get_scheduler

    scheduler = get_scheduler(
        {"constant": "constant_with_warmup"}.get(t.scheduler, t.scheduler),
        optimizer,
        num_warmup_steps=math.ceil(t.warmup_ratio * steps),
        num_training_steps=steps,
    )
    unwrapped = model  # what is saved, validated and restored; `model` becomes what is trained
    loss_fn = partial(answer_loss, pad_to_multiple_of=batching.multiple)
    model, optimizer = accelerator.prepare(dist.LossModule(unwrapped, loss_fn), optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # -- resume -------------------------------------------------------------------------------
    state = ckpt.TrainState()
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, unwrapped, optimizer, scheduler, rank, t.seed)
    state.world_size, state.global_batch = world, dist.global_batch(cfg, world)
    tracker = (
        Tracker(run_dir, cfg, resume_step=state.step if resume_from else None) if main else None
    )

    # -- loop ---------------------------------------------------------------------------------
    lengths = train_split.lengths
    window = t.grad_accum * world  # micro-batches per optimizer step, over all processes
    started = time.perf_counter() - state.elapsed_seconds
    last_loss: float | None = state.train_loss
    patience = t.early_stopping_patience  # a run resumed after it stopped early stays stopped
    stopped_early = patience is not None and state.evals_without_improvement >= patience
    model.train()
    while state.step < steps and not stopped_early:
        batches = epoch_batches(
            train_split.lengths,
            t.batch_size,
            t.seed,
            state.epoch,
            cfg.data.group_by_length,
            cfg.data.group_window,
        )
        while state.batch_in_epoch < len(batches) and state.step < steps:
            step_batches = batches[state.batch_in_epoch : state.batch_in_epoch + window]
            # Tokens that carry loss in the whole window: the loss of each micro-batch is divided
            # by this, times `world` because data parallelism averages gradients over processes.
            window_tokens = sum(
                sum(1 for lab in train_split.labels[i][1:] if lab != -100)
                for b in step_batches
                for i in b
            )
            loss_total = 0.0
            # This rank's micro-batches, cut to the token budget (pieces whose gradients add up
            # to the batch's), padded with zero-weight passes to the count every rank runs.
            passes = dist.rank_passes(
                step_batches, rank, world, lengths, t.max_batch_tokens, batching.tokens
            )
            for micro, (indices, counts) in enumerate(passes):
                batch = {
                    k: v.to(accelerator.device)
                    for k, v in batching.collate(train_split, indices).items()
                }
                sync = micro == len(passes) - 1
                with (
                    accelerator.no_sync(model) if not sync else _nullcontext(),
                    step_autocast(accelerator, cfg),
                ):
                    loss_sum, _ = model(batch, offset, batching.cache_prefix_len)
                    loss = loss_sum * (world / window_tokens if counts else 0.0)
                accelerator.backward(loss)
                loss_total += loss_sum.item() if counts else 0.0
            # The mean over all processes' tokens, for logging and the divergence guard.
            loss_value = accelerator.reduce(
                torch.tensor(loss_total, device=accelerator.device), "sum"
            ).item()
            loss_value /= window_tokens
            grad_norm = accelerator.clip_grad_norm_(trainable, t.max_grad_norm or float("inf"))
            grad_norm = float(grad_norm)
            if (
                not math.isfinite(loss_value)
                or not math.isfinite(grad_norm)
                or grad_norm > t.grad_norm_limit
            ):
                raise _diverged(run_dir, state.step + 1, loss_value, grad_norm, cfg)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            state.step += 1
            state.batch_in_epoch += len(step_batches)
            state.examples_seen += sum(len(b) for b in step_batches)
            state.tokens_seen += sum(len(train_split.input_ids[i]) for b in step_batches for i in b)
            state.elapsed_seconds = time.perf_counter() - started
            last_loss = state.train_loss = loss_value
            record = {
                "step": state.step,
                "epoch": round(state.epoch + state.batch_in_epoch / len(batches), 4),
                "train/loss": loss_value,
                "train/lr": scheduler.get_last_lr()[0],
                "train/grad_norm": grad_norm,
                "train/examples_per_s": state.examples_seen / max(state.elapsed_seconds, 1e-9),
            }

            epoch_done = state.batch_in_epoch >= len(batches)
            run_done = state.step >= steps
            should_eval = val_split is not None and (
                (t.eval_every is not None and state.step % t.eval_every == 0)
                or epoch_done
                or run_done
            )
            if should_eval:
                val = validation_loss(unwrapped, val_split, cfg, pad_id, accelerator)
                record["val/loss"] = val
                if state.best_val_loss is None or val < state.best_val_loss:
                    state.best_val_loss, state.best_step = val, state.step
                    state.evals_without_improvement = 0
                else:
                    state.evals_without_improvement += 1
                    patience = t.early_stopping_patience
                    stopped_early = (
                        patience is not None and state.evals_without_improvement >= patience
                    )
            if epoch_done:
                state.epoch += 1
                state.batch_in_epoch = 0
            if main:
                tracker.log(record)
                if on_step is not None:
                    on_step({**record, "total_steps": steps})
            should_save = (
                (t.save_every is not None and state.step % t.save_every == 0)
                or epoch_done
                or run_done
                or stopped_early
                or (should_eval and state.best_step == state.step)
            )
            if should_save:
                # Each rank's dropout stream is its own; the main process writes them all.
                rngs = dist.gather_rng_states(accelerator, ckpt._rng_state) if world > 1 else None
                if main:
                    ckpt.save_checkpoint(
                        run_dir,
                        unwrapped,
                        optimizer,
                        scheduler,
                        state,
                        t.keep_last,
                        rngs[1:] if rngs else None,
                    )
                accelerator.wait_for_everyone()  # no rank runs ahead of a checkpoint being written
            if stopped_early or epoch_done:
                break  # a new epoch: the outer loop draws its batches (seeded by the epoch)

    # -- finish: restore the best weights (by validation loss) --------------------------------
    if state.best_step is not None and state.best_step != state.step:
        ckpt.load_trainable(
            unwrapped, ckpt.checkpoint_dir(run_dir) / f"{ckpt.PREFIX}{state.best_step:08d}"
        )
    wall = time.perf_counter() - started
    if main:
        tracker.close()
        plot_losses(run_dir)
    return TrainResult(
        run_dir=run_dir,
        steps=state.step,
        final_train_loss=last_loss,
        best_val_loss=state.best_val_loss,
        best_step=state.best_step,
        stopped_early=stopped_early,
        examples_per_second=state.examples_seen / max(state.elapsed_seconds, 1e-9),
        wall_seconds=wall,
    )


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _diverged(
    run_dir: Path, step: int, loss: float, grad_norm: float, cfg: TrainConfig
) -> TrainingDivergedError:
    saved = ckpt.list_checkpoints(run_dir)
    kept = (
        f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was saved before it"
    )
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm:.3g}"
    return TrainingDivergedError(
        f"training diverged at step {step}: {what}; {kept}. Likely fix: lower train.lr "
        f"(now {cfg.train.lr:g}), keep train.max_grad_norm set (now {cfg.train.max_grad_norm}), "
        "or add warmup (train.warmup_ratio)"
    )
