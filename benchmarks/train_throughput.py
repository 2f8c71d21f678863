"""LoRA training throughput: the stock HF `Trainer` + PEFT recipe (A) against tuneforge (B).

    python benchmarks/train_throughput.py --model smollm2-135m --epochs 1 [--per-class 10]

Both variants train the same model on the same Banking77 sample (`--per-class` rows per label,
seeded, from ../shared/data/banking77/train.csv), rendered into chat rows by `tuneforge prepare`
and tokenized with the model's chat template, with the same hyperparameters: LoRA r16 / alpha 32
/ dropout 0.05 (`--dropout`) on q,k,v,o_proj, AdamW lr 2e-4, batch 8, no accumulation, linear
schedule without warmup, grad clip 1.0, seed 0, fp32 on CPU, no evaluation or checkpoints during
training.

A: `transformers.Trainer` with the common recipe: prompt tokens (the chat template rendered with
   add_generation_prompt=True) masked to -100, `DataCollatorForSeq2Seq` padding, random batches.
B: `tuneforge.train.run.train` (answer-only logits, shared-prefix KV reuse, length grouping).

Each variant runs in its own subprocess, so peak RSS (ru_maxrss, read when training and saving
the adapter are done) is per variant; the GGUF -> HF conversion is done beforehand in a third
process, so neither pays for it. Examples/s counts only the training loop (optimizer set up ->
last optimizer step), not model loading, which is reported separately. "final_loss" is the mean
logged training loss (per answer token) over the last 10 % of steps; "heldout_loss" is the loss
per answer token of each trained adapter on `--heldout` other Banking77 rows, computed by the
same code for both (tuneforge's answer masks, full logits, right padding).

`--device cuda` runs both on the GPU in bfloat16 (A: the model loaded in bfloat16 and
`bf16=True`, the common GPU recipe; B: tuneforge's default there) and adds each variant's peak
GPU memory (`torch.cuda.max_memory_allocated`), tokens/s and MFU: tokens/s x 4 N / peak, with N
the base model's linear-layer weights (LM head included), 4 N = forward 2 N + the input
gradients' 2 N through frozen weights (LoRA's own and attention's FLOPs are not counted, so it
understates both a little), peak `--peak-tflops` (989 TFLOP/s: H100/H200 SXM dense bfloat16).

`--profile-steps N` records a torch profiler trace of steps `--profile-from` .. +N-1 in each
variant: the op table (by self CUDA time on a GPU, else self CPU time) goes to
WORKDIR/{A,B}-profile.txt and the summary gains ms per profiled step, kernel launches per step
(GPU) and ATen calls per step. Profiling slows the steps it covers: take examples/s from a run
without it.

Prints one JSON line. Timings on a shared machine are noisy: the load average is recorded.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
GOAL_SPEEDUP = 3.0
GOAL_RSS_RATIO = 0.6


def default_csv() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared/data/banking77/train.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--csv", default=str(default_csv()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.05,
        help="LoRA dropout for both (0 removes the only randomness the two draw differently)",
    )
    parser.add_argument("--scheduler", choices=["linear", "cosine"], default="linear")
    parser.add_argument("--max-steps", type=int, default=None, help="cap both runs (smoke test)")
    parser.add_argument("--variants", default="A,B", help="which to run (A,B); ratios need both")
    parser.add_argument(
        "--a-masking",
        choices=["recipe", "tuneforge"],
        default="recipe",
        help="A's labels: the common recipe (everything after the prompt, incl. the newline "
        "after the end-of-turn token) or exactly tuneforge's labels",
    )
    parser.add_argument(
        "--b-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tuneforge config override for B (e.g. train.max_batch_tokens=1024); repeatable",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.4, help="the GPU's dense bf16 peak, for MFU"
    )
    parser.add_argument("--profile-steps", type=int, default=0, help="profile N steps (0: off)")
    parser.add_argument("--profile-from", type=int, default=10, help="first profiled step (>= 2)")
    parser.add_argument("--workdir", default=None, help="keep data, adapters and logs here")
    parser.add_argument("--only", choices=["warm", "A", "B", "eval"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- data ---------------------------------------------------------------------------------------


def sample_rows(
    path: Path, per_class: int, heldout: int, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """`per_class` rows of every label (seeded), and `heldout` other rows with unseen texts."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(seed)
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row["category"]].append(row)
    train = []
    for label in sorted(by_label):
        train += rng.sample(by_label[label], per_class)
    seen = {r["text"].strip().lower() for r in train}
    rest = [r for r in rows if r["text"].strip().lower() not in seen]
    return train, rng.sample(rest, heldout)


def prepare_split(rows: list[dict[str, str]], out: Path, model: str, tokenizer: Any) -> list[int]:
    """Chat rows exactly as `tuneforge prepare` writes them, all in train.jsonl; returns the
    token length of each row written (prepare's own count)."""
    from tuneforge.config import PrepareConfig, resolve
    from tuneforge.data.prepare import prepare

    raw = out.with_suffix(".csv")
    with open(raw, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "category": r["category"]} for r in rows)
    cfg = resolve(
        PrepareConfig,
        base={
            "inputs": [str(raw)],
            "output_dir": str(out),
            "text_col": "text",
            "label_col": "category",
            "tokenizer": model,
            "split": [1.0, 0.0, 0.0],
            "force": True,
        },
    )
    return prepare(cfg, tokenizer).token_lengths["train"]


def read_messages(path: Path) -> list[list[dict[str, str]]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["messages"] for line in fh if line.strip()]


# -- children -----------------------------------------------------------------------------------


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def peak_gpu_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def mfu(tokens_per_s: float, linear_params: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation of LoRA training: 4 N FLOPs per token (see the docstring)."""
    return tokens_per_s * 4 * linear_params / (peak_tflops * 1e12)


class StepProfiler:
    """torch.profiler over steps [first, first + count) of a run, driven by step-end callbacks.

    `after_step(n)` is called when step n (1-based) has finished: the profiler starts after
    step first - 1 and stops after step first + count - 1, writing its op table to `table`.
    """

    def __init__(self, first: int, count: int, table: Path) -> None:
        if count > 0 and first < 2:
            raise SystemExit("--profile-from must be at least 2 (the profiler starts after a step)")
        self.first, self.count, self.table = first, count, table
        self.profiler: Any = None
        self.started = 0.0
        self.summary: dict[str, Any] | None = None

    def after_step(self, step: int) -> None:
        import torch

        if self.count <= 0:
            return
        cuda = torch.cuda.is_available()
        if step == self.first - 1:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
            self.started = time.perf_counter()
        elif step == self.first + self.count - 1 and self.profiler is not None:
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - self.started
            self.profiler.stop()
            averages = self.profiler.key_averages()
            sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
            self.table.write_text(averages.table(sort_by=sort, row_limit=40))
            launches = sum(e.count for e in averages if "LaunchKernel" in e.key)
            self.summary = {
                "steps": self.count,
                "ms_per_step": round(1e3 * seconds / self.count, 2),
                "kernel_launches_per_step": launches / self.count if cuda else None,
                "aten_calls_per_step": sum(e.count for e in averages if e.key.startswith("aten::"))
                / self.count,
            }


def tail_mean(losses: list[float], fraction: float = 0.1) -> float | None:
    if not losses:
        return None
    k = max(1, math.ceil(fraction * len(losses)))
    return sum(losses[-k:]) / k


def examples_seen(n: int, steps: int, args: argparse.Namespace) -> int:
    """Examples trained on: every row once per epoch (the last batch of an epoch is short)."""
    if args.max_steps is None:
        return round(n * args.epochs)
    return min(steps * args.batch_size, round(n * args.epochs))


def child_warm(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Convert the GGUF into its cache entry (once), so neither variant pays for it."""
    import torch

    from tuneforge.config import ModelConfig
    from tuneforge.models.load import load_model

    model, _, info = load_model(ModelConfig(name=args.model))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return {
        "weights_dir": info.weights_dir,
        "from_cache": info.from_cache,
        "linear_params": linear,
    }


def child_a(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The common recipe: Trainer + PEFT, prompt masked to -100, DataCollatorForSeq2Seq."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from tuneforge.data.format import tokenize_example
    from tuneforge.models.load import load_tokenizer

    warm = json.loads((work / "warm.json").read_text())
    started = time.perf_counter()
    set_seed(args.seed)
    tokenizer = load_tokenizer(args.model)  # the prepared tokenizer: pad token + chat template
    tokenizer.padding_side = "right"  # what SFT recipes train with (Gemma's default is left)
    cuda = args.device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(
        warm["weights_dir"], dtype=torch.bfloat16 if cuda else torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=args.r,
        lora_alpha=2 * args.r,
        lora_dropout=args.dropout,
        target_modules=TARGET_MODULES,
        bias="none",
    )
    model = get_peft_model(model, lora)
    load_seconds = time.perf_counter() - started

    features = []
    for messages in read_messages(work / "train" / "train.jsonl"):
        if args.a_masking == "tuneforge":
            tokens = tokenize_example(tokenizer, messages)
            ids, labels = tokens.input_ids, tokens.labels
        else:
            ids = list(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"])
            prompt = tokenizer.apply_chat_template(
                messages[:-1], tokenize=True, add_generation_prompt=True
            )["input_ids"]
            assert ids[: len(prompt)] == list(prompt), "template is not prefix-stable"
            labels = [-100] * len(prompt) + ids[len(prompt) :]
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    dataset = features  # a list is a map-style dataset: the same sampler, no `datasets` needed

    class Collect(TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.began = self.last_step = 0.0

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, _args: Any, state: Any, *_: Any, **__: Any) -> None:
            self.last_step = time.perf_counter()
            profiler.after_step(state.global_step)

        def on_log(
            self, _args: Any, _state: Any, _control: Any, logs: Any = None, **_: Any
        ) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    profiler = StepProfiler(args.profile_from, args.profile_steps, work / "A-profile.txt")
    collect = Collect()
    training_args = TrainingArguments(
        output_dir=str(work / "A-trainer"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        lr_scheduler_type=args.scheduler,
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        bf16=cuda,
        seed=args.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[collect],
    )
    call_started = time.perf_counter()
    output = trainer.train()
    call_seconds = time.perf_counter() - call_started
    trainer.model.save_pretrained(str(work / "A-adapter"))
    train_seconds = collect.last_step - collect.began
    examples = examples_seen(len(features), output.global_step, args)
    return {
        "examples_per_s": examples / train_seconds,
        "peak_rss_gb": peak_rss_gb(),
        "peak_gpu_gb": peak_gpu_gb(),
        "final_loss": tail_mean(collect.losses),
        "train_seconds": train_seconds,
        "call_seconds": call_seconds,
        "load_seconds": load_seconds,
        "steps": output.global_step,
        "examples_seen": examples,
        "label_tokens": sum(sum(1 for x in f["labels"] if x != -100) for f in features),
        "losses": collect.losses,
        "profile": profiler.summary,
        "adapter": str(work / "A-adapter"),
    }


def child_b(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """tuneforge: the equivalent TrainConfig through `tuneforge.train.run.train`."""
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.train.run import train

    cfg = resolve(
        TrainConfig,
        base={
            "model": {"name": args.model},
            "data": {"dir": str(work / "train")},
            "method": {
                "kind": "lora",
                "r": args.r,
                "alpha": 2 * args.r,
                "dropout": args.dropout,
                "target_modules": TARGET_MODULES,
            },
            "train": {
                "epochs": args.epochs,
                "max_steps": args.max_steps,
                "batch_size": args.batch_size,
                "grad_accum": 1,
                "lr": args.lr,
                "weight_decay": 0.0,
                "warmup_ratio": 0.0,
                "scheduler": args.scheduler,
                "max_grad_norm": 1.0,
                "optimizer": "adamw",
                "seed": args.seed,
            },
            "tracking": {"tensorboard": False},
        },
        overrides=args.b_set,
    )
    losses: list[float] = []
    profiler = StepProfiler(args.profile_from, args.profile_steps, work / "B-profile.txt")

    def on_step(record: dict[str, Any]) -> None:
        losses.append(float(record["train/loss"]))
        profiler.after_step(record["step"])

    run_dir = work / "B-run"
    call_started = time.perf_counter()
    result = train(
        cfg,
        run_dir,
        force=True,
        log=lambda line: print(line, file=sys.stderr),
        on_step=on_step,
    )
    call_seconds = time.perf_counter() - call_started
    manifest = json.loads((run_dir / "manifest.json").read_text())
    examples = examples_seen(manifest["dataset"]["train_examples"], result.steps, args)
    return {
        "examples_per_s": result.examples_per_second,
        "peak_rss_gb": peak_rss_gb(),
        "peak_gpu_gb": peak_gpu_gb(),
        "final_loss": tail_mean(losses),
        "train_seconds": examples / result.examples_per_second,
        "call_seconds": call_seconds,
        "load_seconds": manifest["model"]["load_seconds"],
        "steps": result.steps,
        "examples_seen": examples,
        "losses": losses,
        "profile": profiler.summary,
        "adapter": str(run_dir),
    }


def child_eval(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Loss per answer token on the held-out rows: base model and each adapter, same code."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.data.format import tokenize_example
    from tuneforge.models.load import load_tokenizer

    warm = json.loads((work / "warm.json").read_text())
    device = args.device
    tokenizer = load_tokenizer(args.model)
    examples = [
        tokenize_example(tokenizer, m) for m in read_messages(work / "heldout" / "train.jsonl")
    ]
    examples.sort(key=lambda t: len(t.input_ids))
    adapters = json.loads((work / "adapters.json").read_text())
    losses: dict[str, float] = {}
    for name, adapter in [("base", None), *adapters.items()]:
        model = AutoModelForCausalLM.from_pretrained(warm["weights_dir"], dtype=torch.float32)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        model.to(device).eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(examples), 16):
                chunk = examples[start : start + 16]
                width = max(len(t.input_ids) for t in chunk)
                ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
                labels = torch.full((len(chunk), width), -100)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, t in enumerate(chunk):
                    ids[row, : len(t.input_ids)] = torch.tensor(t.input_ids)
                    labels[row, : len(t.labels)] = torch.tensor(t.labels)
                    mask[row, : len(t.input_ids)] = 1
                ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                targets = labels[:, 1:]
                total += F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    targets.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                ).item()
                count += int((targets != -100).sum())
        losses[name] = total / count
        del model
    return {"heldout_loss": losses, "heldout_rows": len(examples)}


CHILDREN = {"warm": child_warm, "A": child_a, "B": child_b, "eval": child_eval}


def run_child(which: str, argv: list[str], work: Path, device: str) -> dict[str, Any]:
    out = work / f"{which}.json"
    command = [sys.executable, __file__, *argv, "--workdir", str(work), "--only", which]
    env = dict(os.environ)
    if device != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run stays on the CPU on a GPU machine too
    with open(work / f"{which}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False, env=env)
    if done.returncode != 0:
        tail = (work / f"{which}.log").read_text()[-3000:]
        raise SystemExit(f"variant {which} failed (exit {done.returncode}):\n{tail}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.only:
        work = Path(args.workdir)
        result = CHILDREN[args.only](args, work)
        (work / f"{args.only}.json").write_text(json.dumps(result))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="train_throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    base_argv = [a for a in argv if a]
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    train_rows, heldout_rows = sample_rows(Path(args.csv), args.per_class, args.heldout, args.seed)
    train_tokens = prepare_split(train_rows, work / "train", args.model, tokenizer)
    n_train, mean_tokens = len(train_tokens), sum(train_tokens) / len(train_tokens)
    n_heldout = len(prepare_split(heldout_rows, work / "heldout", args.model, tokenizer))
    del tokenizer

    warm = run_child("warm", base_argv, work, args.device)
    (work / "warm.json").write_text(json.dumps(warm))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, dict[str, Any]] = {}
    load: dict[str, list[float]] = {}
    for variant in variants:
        before = os.getloadavg()[0]
        results[variant] = run_child(variant, base_argv, work, args.device)
        load[variant] = [round(before, 2), round(os.getloadavg()[0], 2)]
    (work / "adapters.json").write_text(
        json.dumps({v: results[v].pop("adapter") for v in variants})
    )
    evaluation = run_child("eval", base_argv, work, args.device)
    heldout = evaluation["heldout_loss"]

    summary: dict[str, Any] = {
        "benchmark": "train_throughput",
        "model": args.model,
        "examples": n_train,
        "heldout_examples": n_heldout,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "hyper": {
            "lora_r": args.r,
            "lora_alpha": 2 * args.r,
            "lora_dropout": args.dropout,
            "target_modules": TARGET_MODULES,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "scheduler": args.scheduler,
            "warmup": 0,
            "seed": args.seed,
            "a_masking": args.a_masking,
            "b_overrides": args.b_set,
        },
        "device": args.device,
        "mean_tokens_per_example": round(mean_tokens, 1),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_before_after": load,
        "heldout_loss_base": round(heldout["base"], 4),
    }
    for variant in variants:
        r = results[variant]
        summary[variant] = {
            "examples_per_s": round(r["examples_per_s"], 3),
            "peak_rss_gb": round(r["peak_rss_gb"], 3),
            "final_loss": round(r["final_loss"], 4),
            "heldout_loss": round(heldout[variant], 4),
            "train_seconds": round(r["train_seconds"], 1),
            "load_seconds": round(r["load_seconds"], 2),
            "steps": r["steps"],
        }
        if r.get("profile"):
            summary[variant]["profile"] = r["profile"]
        if args.device == "cuda":
            tokens_per_s = r["examples_per_s"] * mean_tokens
            summary[variant].update(
                peak_gpu_gb=round(r["peak_gpu_gb"], 3),
                tokens_per_s=round(tokens_per_s),
                mfu=round(mfu(tokens_per_s, warm["linear_params"], args.peak_tflops), 4),
            )
    if {"A", "B"} <= set(variants):
        a, b = summary["A"], summary["B"]
        ratio = {
            key: round(b[key] / a[key], 3)
            for key in ("examples_per_s", "peak_rss_gb", "final_loss", "heldout_loss")
        }
        ratio["peak_rss"] = ratio.pop("peak_rss_gb")
        if args.device == "cuda":
            ratio["peak_gpu"] = round(b["peak_gpu_gb"] / a["peak_gpu_gb"], 3)
        summary["ratio"] = ratio
        summary["goals_met"] = {
            "examples_per_s>=3x": ratio["examples_per_s"] >= GOAL_SPEEDUP,
            "peak_rss<=0.6x": ratio["peak_rss"] <= GOAL_RSS_RATIO,
            "final_loss_no_worse": ratio["final_loss"] <= 1.0,
            "heldout_loss_no_worse": ratio["heldout_loss"] <= 1.0,
        }
    summary["workdir"] = str(work)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
