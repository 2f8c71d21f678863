"""Classification eval time by batch size: the predictor `tuneforge eval` uses, one process.

    python benchmarks/eval_batch_size.py RUN_DIR DATA_DIR [--sizes 16,32,64] [--rows 3080]
        [--precision auto|bf16]

Classifies DATA_DIR/test.jsonl (repeated to --rows) with the tuned model of RUN_DIR, label-trie
decoding, LoRA folded in, once per batch size, and prints one JSON line: seconds and rows/s per
size and each size's speed relative to the first (the baseline run in the same process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_throughput import read_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--sizes", default="16,32,64")
    parser.add_argument("--rows", type=int, default=3080)
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args(argv)

    from tuneforge.eval.labels import LabelSet
    from tuneforge.eval.predict import Predictor
    from tuneforge.models.precision import inference_precision
    from tuneforge.models.trained import inspect_run, load_trained, merged_adapter

    rows, _ = read_rows(Path(args.data) / "test.jsonl", args.rows)
    labels = inspect_run(args.run).labels
    assert labels is not None, f"{args.run} is not a classification run"
    model, tokenizer, _ = load_trained(args.run)
    label_set = LabelSet.build(tokenizer, labels, rows[0]["messages"][:-1])
    seconds: dict[int, float] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        with merged_adapter(model), inference_precision(model, args.precision):
            started = time.perf_counter()
            predictor = Predictor(model, tokenizer, batch_size=size)
            prompts = predictor.encode([row["messages"][:-1] for row in rows])
            predictor.classify(prompts, label_set, "constrained")
            seconds[size] = time.perf_counter() - started
    first = next(iter(seconds.values()))
    print(
        json.dumps(
            {
                "benchmark": "eval_batch_size",
                "run": args.run,
                "rows": len(rows),
                "precision": args.precision,
                "by_batch_size": {
                    size: {
                        "seconds": round(s, 1),
                        "rows_per_s": round(len(rows) / s, 1),
                        "speed_vs_first": round(first / s, 2),
                    }
                    for size, s in seconds.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
