"""Classification eval time by batch size and decode pooling: `tuneforge eval`'s predictor.

    python benchmarks/eval_batch_size.py RUN_DIR DATA_DIR [--sizes 16,32,64] [--pools default]
        [--rows 3080] [--precision auto|bf16] [--scoring constrained|exact] [--split test|val]

Classifies DATA_DIR/SPLIT.jsonl (repeated to --rows) with the tuned model of RUN_DIR, LoRA folded
in, once per (batch size, decode pool) pair in one process, and prints one JSON line: seconds,
rows/s and accuracy per setting and each setting's speed relative to the first (the baseline run
in the same process). A decode pool of 0 decodes each batch on its own; `default` is what
`tuneforge eval` uses (`Predictor`'s default, 4 batches).
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
    parser.add_argument("--pools", default="default", help="decode pools in rows, e.g. 0,default")
    parser.add_argument("--rows", type=int, default=3080)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--scoring", default="constrained", choices=["constrained", "exact"])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    args = parser.parse_args(argv)

    from tuneforge.eval.labels import LabelSet
    from tuneforge.eval.predict import Predictor
    from tuneforge.models.precision import inference_precision
    from tuneforge.models.trained import inspect_run, load_trained, merged_adapter

    rows, _ = read_rows(Path(args.data) / f"{args.split}.jsonl", args.rows)
    labels = inspect_run(args.run).labels
    assert labels is not None, f"{args.run} is not a classification run"
    model, tokenizer, _ = load_trained(args.run)
    label_set = LabelSet.build(tokenizer, labels, rows[0]["messages"][:-1])
    settings = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for pool in args.pools.split(","):
            with merged_adapter(model), inference_precision(model, args.precision):
                started = time.perf_counter()
                predictor = Predictor(
                    model,
                    tokenizer,
                    batch_size=size,
                    decode_pool=None if pool == "default" else int(pool),
                )
                prompts = predictor.encode([row["messages"][:-1] for row in rows])
                found = predictor.classify(prompts, label_set, args.scoring)
                seconds = time.perf_counter() - started
            correct = sum(labels[p.label] == r["label"] for p, r in zip(found, rows, strict=True))
            settings.append(
                {
                    "batch_size": size,
                    "decode_pool": predictor.decode_pool,
                    "seconds": round(seconds, 1),
                    "rows_per_s": round(len(rows) / seconds, 1),
                    "accuracy": round(correct / len(rows), 4),
                    "speed_vs_first": round(
                        (settings[0]["seconds"] if settings else seconds) / seconds, 2
                    ),
                }
            )
    print(
        json.dumps(
            {
                "benchmark": "eval_batch_size",
                "run": args.run,
                "rows": len(rows),
                "precision": args.precision,
                "scoring": args.scoring,
                "split": args.split,
                "settings": settings,
            }
        )
    )


if __name__ == "__main__":
    main()
