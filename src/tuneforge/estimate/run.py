"""`estimate`: memory per method and precision, fit per GPU, time (probed here) and cost.

Time on this machine is measured: a short probe (`probe.py`) gives the warm-up step's time and
seconds per training example after it, scaled to examples x epochs; validation adds one forward pass (about a third of a
training step) per validation example per evaluation. On a GPU that was not measured, time is
FLOP-based: training FLOPs (6 N per token for full fine-tuning, 4 N + 6 trainable for adapters,
whose frozen weights need no weight gradients) over the table's peak x utilization -- an
assumption, labelled as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tuneforge.config import MethodConfig, TrainConfig
from tuneforge.errors import TuneforgeError
from tuneforge.estimate import memory as mem
from tuneforge.estimate.prices import Gpu, load_table, select
from tuneforge.estimate.shape import Params, count_params, hf_config, shape_of

GIB = 2**30
VALIDATION_COST = 1 / 3  # a forward pass, against forward + backward (+ optimizer) in training
COMPARED_METHODS = ("full", "lora", "qlora")


def method_variant(method: MethodConfig, kind: str) -> MethodConfig:
    """The configured method's settings (rank, targets, ...) under another kind."""
    quant = "none" if kind != "qlora" else method.quantization
    return MethodConfig.model_validate(
        {
            **method.model_dump(),
            "kind": kind,
            "quantization": "nf4" if quant == "none" and kind == "qlora" else quant,
        }
    )


def data_lengths(cfg: TrainConfig, config: Any) -> tuple[dict[str, Any], Any]:
    """(token lengths of the training and validation rows, the tokenized train split), or
    max_seq_len and None when there is no data.

    `config`: the model's `PretrainedConfig` (its attention window decides packing)."""
    if cfg.data.dir is None:
        return {
            "source": "model.max_seq_len (no data.dir)",
            "train_examples": None,
            "val_examples": 0,
            "longest": cfg.model.max_seq_len,
            "mean": float(cfg.model.max_seq_len),
            "shared_prefix": 0,
            "packed": False,
        }, None
    from tuneforge.models.architecture import config_sliding_window
    from tuneforge.models.cache import cache_root
    from tuneforge.models.load import load_tokenizer
    from tuneforge.train.data import load_tokenized
    from tuneforge.train.loop import plan_batching
    from tuneforge.train.run import check_data_dir

    data_dir = check_data_dir(cfg)
    tokenizer = load_tokenizer(cfg.model)
    cache = cache_root() / "tokenized"
    split = load_tokenized(data_dir / "train.jsonl", tokenizer, cfg.model.max_seq_len, cache)
    if len(split) == 0:
        raise TuneforgeError(f"{data_dir / 'train.jsonl'}: no example to train on")
    val_path = data_dir / "val.jsonl"
    val_n = 0
    if val_path.is_file() and val_path.stat().st_size > 0:
        val_n = len(load_tokenized(val_path, tokenizer, cfg.model.max_seq_len, cache))
    lengths = split.lengths
    # The loop's own decision, from the config instead of a loaded model.
    batching = plan_batching(
        cfg,
        split,
        0,
        cfg.method.kind in ("prompt_tuning", "prefix_tuning"),
        config_sliding_window(config),
    )
    return {
        "source": f"{data_dir / 'train.jsonl'} (tokenized)",
        "train_examples": len(split),
        "val_examples": val_n,
        "longest": max(lengths),
        "mean": sum(lengths) / len(lengths),
        "shared_prefix": batching.prefix_len,
        "packed": batching.packed,
    }, split


def largest_planned_pass(
    cfg: TrainConfig, split: Any, prefix: int, packed: bool, micro_batches: int
) -> int:
    """Tokens of the largest forward pass the run will make, from its own batches.

    Batches are a pure function of (seed, epoch) and the data, so the first `micro_batches`
    of them (steps x grad_accum, one process) are replayed and cut to the token budget exactly
    as the loop cuts them; the batch of the longest rows may never occur in a short run.
    """
    from tuneforge.train.data import Batching, epoch_batches, token_budget_chunks

    t = cfg.train
    lengths = split.lengths
    batching = Batching(0, prefix, packed, cfg.data.pad_to_multiple_of or 1)
    largest, epoch, left = 0, 0, micro_batches
    while left > 0:
        batches = epoch_batches(
            lengths, t.batch_size, t.seed, epoch, cfg.data.group_by_length, cfg.data.group_window
        )
        for batch in batches[:left]:
            for piece in token_budget_chunks(batch, lengths, t.max_batch_tokens, batching.tokens):
                largest = max(largest, batching.computed_tokens([lengths[i] for i in piece]))
        left -= len(batches)
        epoch += 1
    return largest


def memory_table(
    cfg: TrainConfig, config: Any, tokens: int, runtime_cpu: float, cuda_overhead: float
) -> tuple[dict[str, Any], dict[str, Params]]:
    """{method: {precision: breakdown}} for full/lora/qlora and the configured method."""
    shape = shape_of(config)
    kinds = list(dict.fromkeys([cfg.method.kind, *COMPARED_METHODS]))
    table: dict[str, Any] = {}
    counts: dict[str, Params] = {}
    for kind in kinds:
        method = method_variant(cfg.method, kind)
        params = counts[kind] = count_params(config, method)
        rows = {}
        for precision, runtime in ((mem.FP32_CPU, runtime_cpu), (mem.BF16_CUDA, cuda_overhead)):
            rows[precision.name] = mem.breakdown(
                shape, params, precision, kind, tokens,
                dropout=method.dropout, double_quant=method.double_quant,
                checkpointing=cfg.model.gradient_checkpointing, runtime=runtime,
            ).to_dict()  # fmt: skip
        table[kind] = {"parameters": asdict(params), "memory_bytes": rows}
    return table, counts


def training_flops_per_token(params: Params, kind: str) -> float:
    if kind == "full":
        return 6.0 * params.total
    return 4.0 * params.total + 6.0 * params.trainable


def estimate(
    cfg: TrainConfig,
    *,
    gpus: list[str] | None = None,
    examples: int | None = None,
    epochs: float | None = None,
    prices: str | Path | None = None,
    probe_steps: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Everything `tuneforge estimate` reports, as one dict (see the module docstring)."""
    from tuneforge.estimate.probe import current_rss_bytes, probe

    table = load_table(prices)
    chosen = select(table, gpus)
    if examples is not None and examples < 1:
        raise TuneforgeError(f"--examples must be at least 1 (got {examples})")
    if epochs is not None and not 0 < epochs < math.inf:  # also refuses nan
        raise TuneforgeError(f"--epochs must be a positive finite number (got {epochs:g})")
    config = hf_config(cfg.model)
    lengths, split = data_lengths(cfg, config)
    t = cfg.train
    if split is not None and examples is None:
        # The run's own batches (for the configured steps, or --epochs): its real largest pass.
        from tuneforge.train.loop import total_steps

        run_cfg = cfg
        if epochs is not None:  # --epochs replaces both train.epochs and train.max_steps
            update = {"epochs": epochs, "max_steps": None}
            run_cfg = cfg.model_copy(update={"train": t.model_copy(update=update)})
        steps = total_steps(run_cfg, math.ceil(len(split) / t.batch_size), 1)
        tokens = largest_planned_pass(
            cfg, split, lengths["shared_prefix"], lengths["packed"], steps * t.grad_accum
        )
        per_pass_from = f"the largest of the run's {steps * t.grad_accum} micro-batches"
    else:
        # No dataset (or a hypothetical size): the worst case, a batch of the longest rows.
        tokens = mem.tokens_per_pass(
            t.batch_size,
            lengths["longest"],
            t.max_batch_tokens,
            lengths["shared_prefix"],
            lengths["packed"],
            cfg.data.pad_to_multiple_of or 1,
        )
        per_pass_from = f"worst case: batch {t.batch_size} x longest {lengths['longest']}"
    # Framework memory of a training process on CPU: this process's RSS now, with torch,
    # transformers and peft imported and no weights loaded yet.
    runtime_cpu = float(current_rss_bytes())
    cuda_overhead = table.cuda_overhead_gib * GIB
    methods, counts = memory_table(cfg, config, tokens, runtime_cpu, cuda_overhead)

    fits = {}
    for gpu in chosen:
        fits[gpu.name] = {
            kind: methods[kind]["memory_bytes"][mem.BF16_CUDA.name]["total"] <= gpu.memory_gib * GIB
            for kind in methods
        }

    n_examples = examples if examples is not None else lengths["train_examples"]
    n_epochs = epochs if epochs is not None else t.epochs
    global_batch = t.batch_size * t.grad_accum
    timing: dict[str, Any] = {"examples": n_examples, "epochs": n_epochs}
    if n_examples is None:
        timing["note"] = "no data.dir and no --examples: time and cost need a dataset size"
    else:
        if t.max_steps is not None and examples is None and epochs is None:
            seen = t.max_steps * global_batch  # train.max_steps wins over epochs in training
        else:
            seen = math.ceil(n_examples * n_epochs)
        # Validation runs at each epoch end and at the end of the run (and every eval_every).
        evaluations = math.ceil(seen / n_examples - 1e-9)
        if t.eval_every:
            evaluations += seen // global_batch // t.eval_every
        timing.update(examples_seen=seen, validation_passes=evaluations)
        flops = training_flops_per_token(counts[cfg.method.kind], cfg.method.kind)
        tokens_seen = seen * lengths["mean"]
        timing["training_flops"] = flops * tokens_seen
        if probe_steps > 0:
            result = probe(cfg, steps=probe_steps, log=log)
            per_example = result.seconds_per_example
            # The warm-up step costs what it cost in the probe; the rest scales per example.
            rest = max(0, seen - result.warmup_examples)
            train_s = result.warmup_seconds + per_example * rest
            val_s = per_example * VALIDATION_COST * lengths["val_examples"] * evaluations
            timing.update(
                probe=result.to_dict(),
                train_seconds=train_s,
                validation_seconds=val_s,
                total_seconds=result.load_seconds + train_s + val_s,
                achieved_tflops=flops * lengths["mean"] / per_example / 1e12,
            )
    costs = {gpu.name: _gpu_cost(gpu, timing.get("training_flops")) for gpu in chosen}
    return {
        "model": cfg.model.name,
        "method": cfg.method.kind,
        "shape": asdict(shape_of(config)),
        "tokens": {
            **lengths,
            "batch_size": t.batch_size,
            "per_pass": tokens,
            "per_pass_from": per_pass_from,
        },
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
        "methods": methods,
        "gpus": {g.name: asdict(g) for g in chosen},
        "cuda_overhead_bytes": cuda_overhead,
        "fits": fits,
        "time": timing,
        "cost": costs,
        "prices": str(table.source),
    }


def _gpu_cost(gpu: Gpu, flops: float | None) -> dict[str, Any]:
    if flops is None:
        return {"seconds": None, "usd": None}
    seconds = flops / (gpu.bf16_tflops * 1e12 * gpu.utilization)
    return {"seconds": seconds, "usd": seconds / 3600 * gpu.price_per_hour, "basis": "FLOPs"}
