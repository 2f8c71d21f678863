"""`train`: check everything, set up the run directory, run the loop, save what was made.

Everything a user can get wrong (config, data dir, model, target modules) is checked before the
run directory exists, so a bad command leaves nothing behind. A run that starts keeps its
directory (checkpoints included) even if it later fails, so it can be resumed.

Launched on several processes (`accelerate launch` / `torchrun ... -m tuneforge train`), every
process checks and loads the same things; only the main one writes the run directory and
prints (docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.config import ModelConfig, TrainConfig, flat_keys, resolve, to_yaml
from tuneforge.errors import TuneforgeError
from tuneforge.fsutil import atomic_write_text, check_output_dir, sha256_file
from tuneforge.train import checkpoint as ckpt
from tuneforge.train import distributed as dist
from tuneforge.train.loop import TrainResult, train_loop

RUN_FILES = ("config.yaml", "manifest.json", "metrics.jsonl", "loss.png")


def check_data_dir(cfg: TrainConfig) -> Path:
    if cfg.data.dir is None:
        raise TuneforgeError(
            "data.dir is not set: point it at a `tuneforge prepare` output, e.g. data.dir=data/banking77"
        )
    data_dir = Path(cfg.data.dir)
    if not data_dir.is_dir():
        raise TuneforgeError(
            f"data.dir {data_dir}: no such directory; run `tuneforge prepare ... -o {data_dir}`"
        )
    train_file = data_dir / "train.jsonl"
    if train_file.is_dir():
        raise TuneforgeError(f"{train_file}: is a directory; it must be `tuneforge prepare`'s file")
    if not train_file.is_file():
        raise TuneforgeError(
            f"data.dir {data_dir}: no train.jsonl in it; is it a `tuneforge prepare` output?"
        )
    with open(train_file, "rb") as fh:
        if not any(line.strip() for line in fh):
            raise TuneforgeError(
                f"{train_file}: is empty; run `tuneforge prepare` on your examples to fill it"
            )
    return data_dir


def check_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool, force: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to clobber a run, and
    --force to replace anything but a run (a folder of other files, the data, the cwd)."""
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise TuneforgeError(f"--resume: {run_dir} is not a tuneforge run (no config.yaml)")
        check_resume_config(run_dir, cfg)
        found = ckpt.list_checkpoints(run_dir)
        if not found:
            raise TuneforgeError(f"--resume: {run_dir} has no checkpoint to resume from")
        return found[-1]
    check_output_dir(run_dir, overwrite=True, inputs=[cfg.data.dir] if cfg.data.dir else [])
    if run_dir.is_dir() and any(run_dir.iterdir()):
        # A run: its config, or checkpoints (a run cut before writing anything else).
        if not (run_dir / "config.yaml").is_file() and not ckpt.checkpoint_dir(run_dir).is_dir():
            raise TuneforgeError(
                f"{run_dir}: is not empty and holds no tuneforge run (no config.yaml); --force "
                "replaces only a run directory: choose another -o"
            )
        if not force:
            raise TuneforgeError(
                f"{run_dir}: already holds a run; pass --resume to continue it, --force to "
                "replace it, or choose another -o"
            )
    return None


def with_data_dir(cfg: TrainConfig, data_dir: Path) -> TrainConfig:
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": str(data_dir)})})


def check_resume_config(run_dir: Path, cfg: TrainConfig) -> None:
    saved = resolve(TrainConfig, run_dir / "config.yaml")
    if saved.data.dir:  # runs from before data.dir was saved absolute: relative to the cwd
        saved = with_data_dir(saved, Path(saved.data.dir).absolute())
    # grad_accum may change with the number of processes, if the global batch stays the same:
    # `distributed.check_resume_world` checks that once the world size is known.
    allowed = {"train.max_steps", "train.epochs", "train.grad_accum", "tracking"}
    old, new = flat_keys(saved.model_dump(mode="json")), flat_keys(cfg.model_dump(mode="json"))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    changed = [k for k in changed if not any(k == a or k.startswith(a + ".") for a in allowed)]
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise TuneforgeError(
            f"--resume with a different config ({diffs}); resume with the run's own config.yaml "
            "(only train.max_steps, train.epochs, tracking and, with the number of processes, "
            "train.grad_accum may change)"
        )


def make_accelerator(cfg: TrainConfig) -> Any:
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    # On CPU, train.precision=bf16 is the loop's own autocast (loop.step_autocast): accelerate's
    # mixed-precision setting is process-global and could not change between runs.
    wants_bf16 = cfg.model.dtype in ("auto", "bfloat16") or cfg.train.precision == "bf16"
    bf16 = cuda and wants_bf16 and torch.cuda.is_bf16_supported()
    return Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not cuda)


def environment(accelerator: Any) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    versions = {}
    for package in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "bitsandbytes",
        "datasets",
        "safetensors",
    ):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    hardware = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
    }
    if torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name(0)
    return {
        "tuneforge_version": __version__,
        "git_commit": _git_commit(),
        "packages": versions,
        "hardware": hardware,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _silent(message: str) -> None:
    """`log` on processes other than the main one: one copy of each message, not one per rank."""


def peak_memory_bytes() -> dict[str, int]:
    import resource

    import torch

    peak = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peak["cuda_allocated"] = torch.cuda.max_memory_allocated()
    return peak


M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_freed_memory_to_os() -> bool:
    """Have glibc serve blocks of 128 KiB and more by mmap, so freeing them returns the memory.

    By default glibc raises its mmap threshold after the first large free (up to 32 MiB); from
    then on activation-sized blocks come from the heap and stay resident when freed, and peak
    RSS grows by whatever the heap keeps. Fixing the threshold cut a SmolLM2 LoRA run's peak RSS
    to 0.76x but its speed to 0.64x (fresh pages fault in), so it is opt-in
    (`train.return_freed_memory`). True when set (Linux with glibc).
    """
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to set
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def training_model_config(cfg: TrainConfig, device: str) -> ModelConfig:
    """cfg.model, with float32 weights when every weight trains on a GPU under dtype=auto.

    "auto" loads bfloat16 on CUDA: right for frozen weights (LoRA and the other adapters keep
    their own in float32), wrong for weights AdamW updates. bfloat16 keeps 8 significant bits,
    so an update below ~1/256 of a weight (lr 5e-5 makes nearly all of them) rounds away.
    Full fine-tuning therefore keeps float32 master weights and computes in bfloat16 under
    the accelerator's autocast, the usual mixed-precision recipe.
    """
    if cfg.method.kind == "full" and cfg.model.dtype == "auto" and str(device).startswith("cuda"):
        return cfg.model.model_copy(update={"dtype": "float32"})
    return cfg.model


def load_for_training(cfg: TrainConfig, device: str) -> tuple[Any, Any, Any]:
    """(model with the method attached, tokenizer, model info) as `train` builds them."""
    from tuneforge.models.adapters import attach_method
    from tuneforge.models.load import load_model
    from tuneforge.models.packed_attention import (
        register_packed_attention,
        supports_packed_attention,
    )
    from tuneforge.models.precision import freeze_linear_weights_in_bf16

    model, tokenizer, info = load_model(
        training_model_config(cfg, device),
        device=device,
        quantization=cfg.method.quantization,
        double_quant=cfg.method.double_quant,
    )
    model = attach_method(
        model, cfg.method, gradient_checkpointing=cfg.model.gradient_checkpointing
    )
    if cfg.train.precision == "bf16":
        freeze_linear_weights_in_bf16(model)
    if (
        cfg.data.packing
        and cfg.data.packed_attention == "chunks"
        and supports_packed_attention(model)
    ):
        # Long packed rows attend in chunks; without a packed row it is plain SDPA.
        model.config._attn_implementation = register_packed_attention()
    return model, tokenizer, info


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    log: Callable[[str], None] = print,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune per `cfg` into `run_dir`; see the module docstring for the guarantees."""
    from accelerate.utils import set_seed

    from tuneforge.models.adapters import count_parameters, learning_rate_warning
    from tuneforge.models.tokenizer import save_tokenizer
    from tuneforge.train.data import load_tokenized
    from tuneforge.train.tracking import check_backends

    started = time.perf_counter()
    run_dir = Path(run_dir)
    data_dir = check_data_dir(cfg)
    # Saved absolute: eval and export read the run's data from wherever they are started.
    cfg = with_data_dir(cfg, data_dir.absolute())
    check_backends(cfg.tracking)
    # The process group first: every rank checks the run directory before the main one may
    # create (or, with --force, replace) it -- see the barrier below.
    accelerator = make_accelerator(cfg)
    dist.check_supported_engine(accelerator)
    world = accelerator.num_processes
    if not accelerator.is_main_process:
        log = _silent
    resume_from = check_run_dir(run_dir, cfg, resume, force)
    if resume_from is not None:
        dist.check_resume_world(resume_from, run_dir, cfg, world)
    if warning := learning_rate_warning(cfg.method, cfg.train.lr):
        log(f"warning: {warning}")
    lr = dist.effective_lr(cfg, world)
    log(
        f"global batch {dist.global_batch(cfg, world)} = {cfg.train.batch_size} per device x "
        f"{cfg.train.grad_accum} accumulation x {world} process(es); lr {lr:g}"
        + (f" ({cfg.train.lr_scaling} scaling of {cfg.train.lr:g})" if lr != cfg.train.lr else "")
    )

    if cfg.train.return_freed_memory:
        return_freed_memory_to_os()
    set_seed(cfg.train.seed)  # the same initial weights (LoRA, prompt init) on every rank
    # A node's first process fills the caches (GGUF conversion, tokenization); the others read.
    with accelerator.local_main_process_first():
        model, tokenizer, info = load_for_training(cfg, str(accelerator.device))
    if accelerator.process_index > 0:
        set_seed(cfg.train.seed + accelerator.process_index)  # its own dropout draws
    if cfg.train.precision == "bf16" and accelerator.device.type == "cpu":
        from tuneforge.models.precision import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            log(
                "note: train.precision=bf16 on a CPU without native bfloat16 products "
                "(AVX512-BF16/AMX) is likely slower than train.precision=auto"
            )
    trainable, total = count_parameters(model)
    log(
        f"model {cfg.model.name} ({info.source_kind}), method {cfg.method.kind}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.3f} %)"
    )

    from tuneforge.models.cache import cache_root

    token_cache = cache_root() / "tokenized"
    with accelerator.local_main_process_first():
        train_split = load_tokenized(
            data_dir / "train.jsonl", tokenizer, cfg.model.max_seq_len, token_cache
        )
    if len(train_split) == 0:
        raise TuneforgeError(
            f"{data_dir / 'train.jsonl'}: no example has an answer token to train on"
        )
    val_path = data_dir / "val.jsonl"
    val_split = None
    if val_path.is_file() and val_path.stat().st_size > 0:
        with accelerator.local_main_process_first():
            val_split = load_tokenized(val_path, tokenizer, cfg.model.max_seq_len, token_cache)
    if train_split.truncated:
        log(
            f"note: {train_split.truncated} training examples were longer than model.max_seq_len={cfg.model.max_seq_len}; their prompt start was cut"
        )
    if (cfg.train.eval_every or cfg.train.early_stopping_patience) and val_split is None:
        raise TuneforgeError(
            f"train.eval_every / early stopping need validation data: {val_path} is missing or empty"
        )

    # The run directory is created only now: everything above could still fail on bad input.
    accelerator.wait_for_everyone()  # every rank has checked it
    if accelerator.is_main_process:
        if resume_from is None and run_dir.exists():
            shutil.rmtree(run_dir)  # --force: replace the old run, now that the new one can start
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
        save_tokenizer(tokenizer, run_dir)
        for extra in ("labels.json", "manifest.json"):
            if (data_dir / extra).is_file():
                (run_dir / "data").mkdir(exist_ok=True)
                shutil.copyfile(data_dir / extra, run_dir / "data" / extra)
    accelerator.wait_for_everyone()
    if resume_from is not None:
        log(f"resuming from {resume_from}")

    result = train_loop(
        cfg, run_dir, model, tokenizer, accelerator, train_split, val_split, resume_from, on_step
    )

    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(run_dir, safe_serialization=True)
        manifest = {
            "run": run_dir.name,
            "method": cfg.method.kind,
            "model": info.to_dict(),
            "dataset": {
                "dir": str(data_dir),
                "manifest_sha256": sha256_file(data_dir / "manifest.json")
                if (data_dir / "manifest.json").is_file()
                else None,
                "train_sha256": sha256_file(data_dir / "train.jsonl"),
                "train_examples": len(train_split),
                "val_examples": len(val_split) if val_split is not None else 0,
                "truncated": train_split.truncated,
            },
            "parameters": {"trainable": trainable, "total": total},
            "seed": cfg.train.seed,
            "result": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()
            },
            "global_batch": dist.global_batch(cfg, world),
            "distributed": {
                "processes": world,
                "engine": str(accelerator.distributed_type).rsplit(".", 1)[-1],
                "per_device_batch": cfg.train.batch_size,
                "grad_accum": cfg.train.grad_accum,
                "lr": cfg.train.lr,
                "lr_scaling": cfg.train.lr_scaling,
                "lr_reference_batch": cfg.train.lr_reference_batch,
                "effective_lr": lr,
            },
            "wall_seconds": round(time.perf_counter() - started, 2),
            "peak_memory_bytes": peak_memory_bytes(),
            **environment(accelerator),
        }
        atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return result
