"""Classification eval throughput: a plain `generate` loop (A) against tuneforge's predictor (B).

    python benchmarks/eval_throughput.py [--rows 3080] [--plain-rows 200] [--run RUN_DIR]

Data: ../shared/data/banking77/train.csv prepared by `tuneforge prepare` (SmolLM2 tokenizer,
seeded stratified split 60/9/31 so the held-out test split alone has >= 3,080 rows; repeated
only if it has fewer), or `--data DIR`: DIR/test.jsonl (a run's own split). Model: a LoRA run
of SmolLM2-135M -- `--run` names one, otherwise a short one is trained here first
(`configs/smollm2-135m/lora.yaml`, `--train-steps` steps; its time is not counted). Both
variants use the tuned model, loaded the same way (`load_trained`), in one process one after
the other.

A: the loop a user writes first -- per row, the chat template with the generation prompt,
   `model.generate` (greedy, max_new_tokens = longest label + 4), decode, strip; an answer
   outside the label set is invalid. Timed on `--plain-rows` rows (it is slow); the time for
   all rows is projected from its rate and marked as such.
B: `tuneforge.eval.predict.Predictor.classify(..., "constrained")`, the path `tuneforge eval`
   takes for a 77-label task: shared-prefix KV reuse, length-sorted batches with middle padding,
   label-trie decoding that stops once one label is left, the LoRA folded into the weights
   while predicting. Timed on all `--rows` rows, tokenization included.
C: B under `tuneforge eval --precision bf16` (bfloat16 matrix products, float32 weights), on
   the same rows; its answers are compared with B's (agreement). `--no-bf16` skips it.

Prints one JSON line: rows/s, seconds, invalid labels and accuracy for each, B/A and C/B.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_SECONDS = 60.0
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3080)
    parser.add_argument("--plain-rows", type=int, default=200)
    parser.add_argument("--run", default=None, help="a LoRA run dir of SmolLM2 (else trained here)")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--csv", default=str(ROOT.parent / "shared/data/banking77/train.csv"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--data",
        default=None,
        help="a prepared data dir whose test.jsonl to classify (e.g. the run's own, from "
        "benchmarks/banking77.py); default: prepare the 60/9/31 split described above",
    )
    parser.add_argument("--no-bf16", action="store_true", help="skip variant C")
    return parser.parse_args(argv)


def prepare_data(csv_path: str, out: Path) -> Path:
    from tuneforge.config import PrepareConfig, resolve
    from tuneforge.data.prepare import prepare
    from tuneforge.models.load import load_tokenizer

    if (out / "test.jsonl").is_file():
        return out
    cfg = resolve(
        PrepareConfig,
        base={
            "inputs": [csv_path],
            "output_dir": str(out),
            "text_col": "text",
            "label_col": "category",
            "tokenizer": "smollm2-135m",
            "split": [0.6, 0.09, 0.31],
        },
    )
    prepare(cfg, load_tokenizer("smollm2-135m"))
    return out


def train_run(data_dir: Path, out: Path, steps: int) -> Path:
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.train.run import train

    if (out / "adapter_model.safetensors").is_file():
        return out
    cfg = resolve(
        TrainConfig,
        yaml_path=ROOT / "configs/smollm2-135m/lora.yaml",
        overrides=[f"data.dir={data_dir}", f"train.max_steps={steps}", "train.eval_every=null"],
    )
    train(cfg, out, force=True, log=lambda line: print(line, file=sys.stderr))
    return out


def read_rows(path: Path, count: int) -> tuple[list[dict[str, Any]], bool]:
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    repeated = len(rows) < count
    while len(rows) < count:
        rows += rows[: count - len(rows)]
    return rows[:count], repeated


def plain_generate_loop(
    model: Any, tokenizer: Any, rows: list[dict], labels: list[str], max_new: int
):
    import torch

    valid, correct = 0, 0
    started = time.perf_counter()
    with torch.inference_mode():
        for row in rows:
            ids = tokenizer.apply_chat_template(
                row["messages"][:-1], add_generation_prompt=True, return_tensors="pt"
            )
            ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
            )
            answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            valid += answer in labels
            correct += answer == row["label"]
    seconds = time.perf_counter() - started
    return seconds, valid, correct


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="eval_throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else prepare_data(args.csv, work / "data")
    run_dir = Path(args.run) if args.run else train_run(data_dir, work / "run", args.train_steps)

    import torch

    from tuneforge.eval.labels import LabelSet
    from tuneforge.eval.predict import Predictor
    from tuneforge.models.precision import cpu_has_native_bf16, inference_precision
    from tuneforge.models.trained import inspect_run, load_trained, merged_adapter

    labels = inspect_run(run_dir).labels
    assert labels is not None, f"{run_dir} is not a classification run"
    rows, repeated = read_rows(data_dir / "test.jsonl", args.rows)
    model, tokenizer, _ = load_trained(run_dir)
    label_set = LabelSet.build(tokenizer, labels, rows[0]["messages"][:-1])
    torch.manual_seed(0)

    def tuneforge_predictions(precision: str) -> tuple[float, list[str]]:
        """As `tuneforge eval --precision PRECISION` predicts with the tuned model, all rows."""
        started = time.perf_counter()
        with merged_adapter(model), inference_precision(model, precision):
            predictor = Predictor(model, tokenizer, batch_size=args.batch_size)
            prompts = predictor.encode([row["messages"][:-1] for row in rows])
            found = predictor.classify(prompts, label_set, "constrained")
        return time.perf_counter() - started, [labels[p.label] for p in found]

    def scored(seconds: float, pred: list[str]) -> dict[str, Any]:
        invalid = sum(p not in labels for p in pred)
        return {
            "seconds": round(seconds, 1),
            "rows_per_s": round(len(rows) / seconds, 2),
            "invalid_labels": invalid,
            "accuracy": round(
                sum(p == r["label"] for p, r in zip(pred, rows, strict=True)) / len(rows), 4
            ),
            "goal_met": seconds <= GOAL_SECONDS and invalid == 0,
        }

    b_seconds, b_pred = tuneforge_predictions("auto")
    variant_c = None
    if not args.no_bf16:
        c_seconds, c_pred = tuneforge_predictions("bf16")
        variant_c = scored(c_seconds, c_pred)
        variant_c["agreement_with_B"] = round(
            sum(b == c for b, c in zip(b_pred, c_pred, strict=True)) / len(rows), 4
        )

    # A: the plain loop, on a sample (rows are in file order, already shuffled by the split).
    plain = rows[: args.plain_rows]
    a_seconds, a_valid, a_correct = plain_generate_loop(
        model, tokenizer, plain, labels, label_set.longest + 4
    )
    a_rate = len(plain) / a_seconds
    summary = {
        "benchmark": "eval_throughput",
        "model": "smollm2-135m + LoRA",
        "run": str(run_dir),
        "data": str(data_dir),
        "labels": len(labels),
        "rows": len(rows),
        "rows_repeated": repeated,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "A_plain_generate": {
            "rows_timed": len(plain),
            "seconds": round(a_seconds, 1),
            "rows_per_s": round(a_rate, 2),
            "projected_seconds_all_rows": round(len(rows) / a_rate, 1),
            "invalid_rate": round(1 - a_valid / len(plain), 4),
            "accuracy": round(a_correct / len(plain), 4),
        },
        "B_tuneforge": {
            **scored(b_seconds, b_pred),
            "accuracy_on_A_rows": round(
                sum(p == r["label"] for p, r in zip(b_pred, plain, strict=False)) / len(plain), 4
            ),
        },
        "C_tuneforge_bf16": variant_c,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "ratio_rows_per_s": round(len(rows) / b_seconds / a_rate, 2),
        "ratio_C_over_B": round(b_seconds / variant_c["seconds"], 2) if variant_c else None,
        "workdir": str(work),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
