"""Every export kind of one run, each reloaded and checked against the trained model.

    python benchmarks/export_roundtrip.py RUN_DIR --out /tmp/exports [--rows 64] [--kinds ...]

For each kind (adapter, merged, int4 nf4, GGUF f16 / q8_0 / q4_0, Ollama q8_0) it runs
`tuneforge.export.run.export_run` in its own subprocess (so peak memory and import time are per
export, as from the CLI) and records: prediction agreement with the unmerged adapter on `--rows`
held-out rows, next-token agreement on the answer tokens, the max |logit difference|, the size
of the exported files, the exact-match accuracy of both models on those rows, and the wall time
of the whole command (load, reference, write, reload, validate). An export that fails its check
is reported with its figures (from OUT.failed-validation/). Prints a markdown table and one JSON
line. Timings on a shared machine are noisy:
the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

KINDS = {
    "adapter": ("adapter", None),
    "merged": ("merged", None),
    "int4": ("int4", "nf4"),
    "gguf-f16": ("gguf", "f16"),
    "gguf-q8_0": ("gguf", "q8_0"),
    "gguf-q5_1": ("gguf", "q5_1"),
    "gguf-q4_1": ("gguf", "q4_1"),
    "gguf-q4_0": ("gguf", "q4_0"),
    "ollama": ("ollama", "q8_0"),
}

_CHILD = """
import json, sys, time
from tuneforge.cli.common import quiet_libraries
quiet_libraries()
from tuneforge.export.run import export_run, failed_dir
from tuneforge.export.validate import ValidationFailed
run, to, out, quant, rows, floor = sys.argv[1:7]
started = time.perf_counter()
try:
    result = export_run(run, to, out, quant=quant or None, validate_rows=int(rows), force=True,
                        min_agreement=float(floor) if floor else None,
                        log=lambda line: print(line, file=sys.stderr))
    v, size = result.validation.to_dict(), sum(result.files.values())
except ValidationFailed:  # the figures are kept in OUT.failed-validation/tuneforge.json
    meta = json.loads((failed_dir(out) / "tuneforge.json").read_text())
    v, size = meta["validation"], sum(f["bytes"] for f in meta["files"].values())
keys = ("agreement", "token_agreement", "max_logit_diff", "rows", "passed", "min_agreement",
        "tokenizer_agreement", "trained_accuracy", "export_accuracy")
print(json.dumps({**{k: v.get(k) for k in keys}, "bytes": size,
                  "seconds": round(time.perf_counter() - started, 1)}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default="/tmp/tuneforge-exports")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"subset of {', '.join(KINDS)}")
    parser.add_argument("--min-agreement", default="", help="override the per-format default")
    args = parser.parse_args(argv)

    results = {}
    for label in args.kinds.split(","):
        to, quant = KINDS[label]
        out = Path(args.out) / label
        started = time.perf_counter()
        argv = [args.run_dir, to, str(out), quant or "", str(args.rows), args.min_agreement]
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            results[label] = {"error": proc.stderr.strip().splitlines()[-1:], "rc": proc.returncode}
        else:
            results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[label]["process_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{label}: {results[label]}", file=sys.stderr)

    print(
        "| export | agreement (required) | token agreement | max abs logit diff "
        "| accuracy trained / exported | size | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        if "error" in r:
            print(f"| {label} | error (exit {r['rc']}): {' '.join(r['error'])} | | | | | |")
            continue
        verdict = "" if r["passed"] else " **rejected**"
        print(
            f"| {label} | {100 * r['agreement']:.1f} % of {r['rows']} "
            f"({100 * r['min_agreement']:.0f} %){verdict} | {100 * r['token_agreement']:.1f} % | "
            f"{r['max_logit_diff']:.3g} | {100 * r['trained_accuracy']:.1f} / "
            f"{100 * r['export_accuracy']:.1f} % | {r['bytes'] / 2**20:.1f} MiB | "
            f"{r['seconds']:.0f} |"
        )
    print(
        json.dumps(
            {
                "run": args.run_dir,
                "rows": args.rows,
                "load_avg": os.getloadavg(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
