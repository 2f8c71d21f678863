"""Check `tuneforge estimate` against finished runs: peak memory and training time.

    python benchmarks/estimate_check.py RUN_DIR [RUN_DIR ...] [--probe] [--tiny WORKDIR]

For each `tuneforge train` run directory: the batches the run saw are replayed (they are a pure
function of seed and epoch), giving the largest forward pass it really ran (rows x longest row,
the shared prompt prefix once, cut to train.max_batch_tokens); the estimator's fp32 (CPU) total
for that pass is compared with the run's measured peak RSS (manifest.json). With --probe, the
estimator's time (a 3-step probe of the run's config, here and now, scaled to the examples the
run saw, plus its validation passes) is compared with the run's training-loop wall time.

--tiny WORKDIR first trains two runs like the test suite's (the in-process tiny llama, LoRA and
full, 8 steps, each `tuneforge train` in its own process) and checks them too.
Prints one JSON line per run and a markdown table. Goals: memory within +-20 %, time +-30 %.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import accelerate  # noqa: F401  # imported before measuring the runtime RSS, as train does
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

from tuneforge.estimate.probe import current_rss_bytes

# The framework's resident memory, measured before any model loads (the estimator's runtime).
RUNTIME_RSS = current_rss_bytes()


def largest_pass(cfg: Any, run_dir: Path, steps: int) -> dict[str, Any]:
    """The largest forward pass of the run's own batches, as `tuneforge estimate` replays them."""
    from tuneforge.estimate.run import data_lengths, largest_planned_pass
    from tuneforge.estimate.shape import hf_config

    lengths, split = data_lengths(cfg, hf_config(cfg.model))
    micro = steps * cfg.train.grad_accum
    prefix, packed = lengths["shared_prefix"], lengths["packed"]
    tokens = largest_planned_pass(cfg, split, prefix, packed, micro)
    return {"tokens": tokens, "prefix": prefix, "packed": packed, "micro_batches": micro}


def check(run_dir: Path, with_probe: bool) -> dict[str, Any]:
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.estimate import memory as mem
    from tuneforge.estimate.run import VALIDATION_COST
    from tuneforge.estimate.shape import count_params, hf_config, shape_of

    cfg = resolve(TrainConfig, run_dir / "config.yaml")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    steps = manifest["result"]["steps"]
    largest = largest_pass(cfg, run_dir, steps)
    config = hf_config(cfg.model)
    params = count_params(config, cfg.method)
    estimate = mem.breakdown(
        shape_of(config), params, mem.FP32_CPU, cfg.method.kind, largest["tokens"],
        dropout=cfg.method.dropout, double_quant=cfg.method.double_quant,
        checkpointing=cfg.model.gradient_checkpointing, runtime=RUNTIME_RSS,
    )  # fmt: skip
    measured = manifest["peak_memory_bytes"]["rss"]
    out: dict[str, Any] = {
        "run": str(run_dir),
        "model": cfg.model.name,
        "method": cfg.method.kind,
        "r": cfg.method.r,
        "steps": steps,
        "largest_pass": largest,
        "estimate_bytes": {k: round(v) for k, v in estimate.to_dict().items()},
        "measured_peak_rss": measured,
        "memory_ratio": round(estimate.total / measured, 3),
        "loadavg_1m": os.getloadavg()[0],
    }
    if with_probe:
        import torch

        from tuneforge.estimate.probe import probe

        # The probe must run as the training did: same torch threads (the test-suite-like runs
        # use one; two threads on a busy 2-core machine slow millisecond steps many times over).
        torch.set_num_threads(manifest["hardware"]["torch_threads"])
        result = probe(cfg, steps=3, log=lambda _: None)
        seen = steps * cfg.train.batch_size * cfg.train.grad_accum  # what the loop consumed
        train_n = manifest["dataset"]["train_examples"]
        val_n = manifest["dataset"]["val_examples"]
        evaluations = math.ceil(seen / train_n - 1e-9) if val_n else 0
        rest = max(0, seen - result.warmup_examples) + VALIDATION_COST * val_n * evaluations
        predicted = result.warmup_seconds + result.seconds_per_example * rest
        actual = manifest["result"]["wall_seconds"]
        out.update(
            probe_seconds_per_example=round(result.seconds_per_example, 4),
            estimated_train_seconds=round(predicted, 1),
            measured_train_seconds=round(actual, 1),
            time_ratio=round(predicted / actual, 3),
            loadavg_1m_after=os.getloadavg()[0],
        )
    return out


def tiny_runs(workdir: Path) -> list[Path]:
    """Two runs like the test suite's: the tiny llama, LoRA and full, in their own processes."""
    from tuneforge.models.tiny import build_tiny_causal_lm

    workdir.mkdir(parents=True, exist_ok=True)
    model = build_tiny_causal_lm(workdir / "tiny", "llama")
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    rows = []
    for i in range(48):
        word = ["apple", "carrot", "salmon", "oak"][i % 4]
        answer = ["fruit", "a vegetable, of course", "fish", "tree"][i % 4]
        messages = [
            {"role": "user", "content": f"What is {word}? item {i}" + " please" * (i % 5)},
            {"role": "assistant", "content": answer},
        ]
        rows.append(json.dumps({"messages": messages}))
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    runs = []
    for kind in ("lora", "full"):
        run = workdir / f"run-{kind}"
        cmd = [
            sys.executable, "-m", "tuneforge", "train", "configs/smollm2-135m/lora.yaml",
            f"model.name={model}", f"data.dir={data}", f"method.kind={kind}",
            "tracking.tensorboard=false", "train.max_steps=8", "train.batch_size=8",
            "train.lr=1e-3", "-o", str(run), "--force",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--probe", action="store_true", help="also check the time estimate")
    parser.add_argument("--tiny", type=Path, help="train and check two tiny runs here first")
    args = parser.parse_args()
    runs = (tiny_runs(args.tiny) if args.tiny else []) + list(args.runs)
    results = [check(run, args.probe) for run in runs]
    print("| run | method | largest pass (tokens) | estimate | measured peak RSS | ratio |"
          + (" est. time | measured time | ratio |" if args.probe else ""))  # fmt: skip
    print("|---|---|---|---|---|---|" + ("---|---|---|" if args.probe else ""))
    for r in results:
        line = (
            f"| {Path(r['run']).name} | {r['method']} r{r['r']} | {r['largest_pass']['tokens']} | "
            f"{r['estimate_bytes']['total'] / 2**30:.2f} GiB | "
            f"{r['measured_peak_rss'] / 2**30:.2f} GiB | {r['memory_ratio']:.2f} |"
        )
        if args.probe:
            line += (
                f" {r['estimated_train_seconds']:.0f} s | {r['measured_train_seconds']:.0f} s |"
                f" {r['time_ratio']:.2f} |"
            )
        print(line)
    for r in results:
        print(json.dumps({"benchmark": "estimate_check", **r}))


if __name__ == "__main__":
    main()
