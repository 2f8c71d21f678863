"""Int8 dynamic quantization for classification eval: speed against agreement with fp32.

    python benchmarks/eval_int8.py RUN_DIR TEST_JSONL [--rows 400] [--variants fp32,int8pc,...]

RUN_DIR: a classification LoRA run (e.g. the Banking77 recipe's `OUT/run` from
`benchmarks/banking77.py`); TEST_JSONL: its prepared test split. The adapter is merged into the
weights, then each variant classifies the first `--rows` rows with constrained decoding (as
`tuneforge eval` does for many labels), one after the other in this process:

  fp32      the merged model as `tuneforge eval` runs it
  int8pc    `torch.ao.quantization.quantize_dynamic`, per-channel int8 weights, every nn.Linear
            (LM head included)
  int8pt    the same with per-tensor weights
  int8body  per-channel int8 on the decoder only; the LM head stays fp32

Prints one JSON line per variant: seconds, rows/s, accuracy, agreement with the first variant.
Speed ratios are meaningful within one command only (same machine load).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

VARIANTS = ("fp32", "int8pc", "int8pt", "int8body")


def quantized(model, variant: str):
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    if variant == "fp32":
        return model
    qconfig = default_dynamic_qconfig if variant == "int8pt" else per_channel_dynamic_qconfig
    copied = copy.deepcopy(model)
    if variant == "int8body":
        copied.model = quantize_dynamic(copied.model, {torch.nn.Linear: qconfig})
        return copied
    return quantize_dynamic(copied, {torch.nn.Linear: qconfig})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("test")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao is deprecated

    from tuneforge.eval.labels import LabelSet
    from tuneforge.eval.predict import Predictor
    from tuneforge.models.trained import inspect_run, load_trained

    labels = inspect_run(args.run).labels
    if labels is None:
        parser.error(f"{args.run} is not a classification run")
    with open(Path(args.test), encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()][: args.rows]
    model, tokenizer, _ = load_trained(args.run)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.eval()
    label_set = LabelSet.build(tokenizer, labels, rows[0]["messages"][:-1])
    first: list[str] | None = None
    for variant in variants:
        predictor = Predictor(quantized(merged, variant), tokenizer, batch_size=args.batch_size)
        prompts = predictor.encode([row["messages"][:-1] for row in rows])
        started = time.perf_counter()
        found = predictor.classify(prompts, label_set, "constrained")
        seconds = time.perf_counter() - started
        pred = [labels[p.label] for p in found]
        first = first or pred
        correct = sum(p == row["label"] for p, row in zip(pred, rows, strict=True))
        agree = sum(a == b for a, b in zip(pred, first, strict=True))
        print(
            json.dumps(
                {
                    "benchmark": "eval_int8",
                    "variant": variant,
                    "rows": len(rows),
                    "seconds": round(seconds, 1),
                    "rows_per_s": round(len(rows) / seconds, 2),
                    "accuracy": round(correct / len(rows), 4),
                    "agrees_with_first": round(agree / len(rows), 4),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
