"""Time `tuneforge prepare` on Banking77 (10,003 rows) with the default tokenizer.

    python benchmarks/prepare_banking77.py [--csv ../shared/data/banking77/train.csv]

Prints one JSON line: wall seconds, rows, labels, and the ratio against the 60 s goal.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tuneforge.config import PrepareConfig, resolve
from tuneforge.data.prepare import prepare
from tuneforge.models.load import load_tokenizer

GOAL_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser()
    default_csv = Path(__file__).resolve().parents[1].parent / "shared/data/banking77/train.csv"
    parser.add_argument("--csv", default=str(default_csv))
    parser.add_argument("--tokenizer", default="smollm2-135m")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tokenizer = load_tokenizer(args.tokenizer)
        loaded = time.perf_counter()
        cfg = resolve(
            PrepareConfig,
            base={
                "inputs": [args.csv],
                "output_dir": str(Path(tmp) / "out"),
                "text_col": "text",
                "label_col": "category",
                "tokenizer": args.tokenizer,
            },
        )
        outcome = prepare(cfg, tokenizer)
        done = time.perf_counter()
    total = done - start
    print(
        json.dumps(
            {
                "benchmark": "prepare_banking77",
                "rows_read": sum(i.records for i in outcome.inputs),
                "labels": len(outcome.labels or []),
                "splits": {k: len(v) for k, v in outcome.splits.items()},
                "tokenizer_load_s": round(loaded - start, 2),
                "prepare_s": round(done - loaded, 2),
                "total_s": round(total, 2),
                "goal_s": GOAL_SECONDS,
                "goal_ratio": round(total / GOAL_SECONDS, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
