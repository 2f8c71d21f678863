"""Host work per training step: ATen ops dispatched by A (HF Trainer + PEFT) and B (tuneforge).

    python benchmarks/step_ops.py [--model smollm2-135m] [--width 64] [--steps 10]

On a GPU at small batch both variants of `train_throughput.py` are bound by the host launching
kernels (session 11, H200: 0.06-0.07 % MFU), so the number of ops a step dispatches, not its
FLOPs, sets the pace. This counts them on the CPU, where the count is exact and noise-free:
the model's own architecture (depth, heads, vocabulary, template) at a narrow width, random
weights, the same 8-example Banking77 batches and LoRA settings as `train_throughput.py`.
Each variant runs `--steps` more steps than a short run; the difference over `--steps` is the
per-step count (model loading and set-up cancel out). Optimizer ops are AdamW's single-tensor
CPU path in both (CUDA's default foreach path dispatches fewer).

Prints one JSON line: ops per step for A and B, B/A, and the op kinds whose counts differ most.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput


def narrow_copy(model: str, out: Path, width: int) -> Path:
    """The model's config at hidden size `width` (random weights) with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.config import ModelConfig
    from tuneforge.models.load import load_model

    _, tokenizer, info = load_model(ModelConfig(name=model))
    config = AutoConfig.from_pretrained(info.weights_dir)
    heads = max(1, width // 16)
    config.hidden_size, config.intermediate_size = width, 2 * width
    config.num_attention_heads, config.head_dim = heads, width // heads
    config.num_key_value_heads = max(1, heads // 2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def count_ops(run: Any) -> collections.Counter[str]:
    """ATen op name -> times dispatched while `run()` ran (backward included)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter[str] = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket).removeprefix("aten.")] += 1
            return func(*args, **(kwargs or {}))

    with Count() as counter:
        run()
    return counter.ops


def per_step_ops(variant: str, model_dir: Path, work: Path, steps: int) -> collections.Counter:
    child = {"A": train_throughput.child_a, "B": train_throughput.child_b}[variant]
    counts = []
    for max_steps in (2, 2 + steps):
        args = train_throughput.parse_args(
            ["--model", str(model_dir), "--max-steps", str(max_steps)]
        )
        counts.append(count_ops(lambda args=args: child(args, work)))
    diff = counts[1].copy()
    diff.subtract(counts[0])
    return diff


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="step_ops-"))
    model_dir = narrow_copy(args.model, work / "model", args.width)
    (work / "warm.json").write_text(json.dumps({"weights_dir": str(model_dir)}))
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    rows, _ = train_throughput.sample_rows(train_throughput.default_csv(), args.per_class, 0, 0)
    train_throughput.prepare_split(rows, work / "train", str(model_dir), tokenizer)

    ops = {v: per_step_ops(v, model_dir, work, args.steps) for v in ("A", "B")}
    per_step = {v: sum(c.values()) / args.steps for v, c in ops.items()}
    kinds = set(ops["A"]) | set(ops["B"])
    differ = sorted(kinds, key=lambda k: -abs(ops["B"][k] - ops["A"][k]))[:10]
    print(
        json.dumps(
            {
                "benchmark": "step_ops",
                "model": args.model,
                "width": args.width,
                "steps": args.steps,
                "ops_per_step": per_step,
                "ratio": round(per_step["B"] / per_step["A"], 3),
                "most_different": {
                    k: [ops["A"][k] / args.steps, ops["B"][k] / args.steps] for k in differ
                },
            }
        )
    )


if __name__ == "__main__":
    main()
