"""Check a `compare` command completely before anything is trained or written."""

from __future__ import annotations

import shutil
from pathlib import Path

from tuneforge.compare.grid import expand
from tuneforge.compare.runner import (
    Comparison,
    EvalOptions,
    Paths,
    check_existing,
    count_test_rows,
)
from tuneforge.errors import TuneforgeError

# What a compare output directory holds; --force only deletes a directory that has one of these.
MARKERS = ("summary.json", "runs", "configs")


def plan_comparison(
    config: str | Path,
    overrides: list[str],
    grid: list[str],
    out_dir: str | Path,
    eval_opts: EvalOptions | None = None,
    *,
    data: str | Path | None = None,
    budget_minutes: float | None = None,
    price_per_hour: float | None = None,
    force: bool = False,
) -> Comparison:
    """Resolve and validate every variant, the data and the options; raise TuneforgeError on
    anything wrong. Writes nothing (with `force`, it deletes OUT only after all checks pass)."""
    from tuneforge.eval.predict import resolve_scoring
    from tuneforge.models.precision import check_precision
    from tuneforge.train.run import check_data_dir

    axes, variants = expand(config, overrides, grid)
    data_dir = check_data_dir(variants[0].config)
    test = Path(data) if data is not None else data_dir / "test.jsonl"
    if data is None and not test.is_file():
        raise TuneforgeError(
            f"data.dir {data_dir}: no test.jsonl to compare the variants on; pass --data TEST.jsonl "
            "(a held-out `tuneforge prepare` split)"
        )
    opts = eval_opts or EvalOptions(data=test)
    opts.data = test
    if opts.limit is not None and opts.limit < 1:
        raise TuneforgeError(f"--limit must be at least 1 (got {opts.limit})")
    if opts.batch_size < 1:
        raise TuneforgeError(f"--batch-size must be at least 1 (got {opts.batch_size})")
    resolve_scoring(opts.scoring, 1)  # checks the name before anything trains
    check_precision(opts.precision)
    if {"fewshot", "rag"} & set(opts.baselines) and opts.shots < 1:
        raise TuneforgeError(f"--shots must be at least 1 for fewshot/rag (got {opts.shots})")
    if budget_minutes is not None and budget_minutes <= 0:
        raise TuneforgeError(f"--budget-minutes must be positive (got {budget_minutes:g})")
    if price_per_hour is not None and price_per_hour < 0:
        raise TuneforgeError(f"--price-per-hour must not be negative (got {price_per_hour:g})")
    expected_n = count_test_rows(test, opts.limit)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TuneforgeError(f"{out}: exists and is not a directory; choose another -o")
    ours = any((out / marker).exists() for marker in MARKERS)
    if force and out.exists() and any(out.iterdir()) and not ours:
        raise TuneforgeError(
            f"{out}: --force replaces a compare output directory, and this is not one "
            "(no summary.json, runs/ or configs/); choose another -o"
        )
    paths = Paths(out)
    if not force:
        check_existing(variants, paths)
    if force and out.exists():
        shutil.rmtree(out)
    return Comparison(
        config=Path(config),
        overrides=list(overrides),
        axes=axes,
        variants=variants,
        paths=paths,
        eval_opts=opts,
        expected_n=expected_n,
        budget_seconds=budget_minutes * 60 if budget_minutes is not None else None,
        price_per_hour=price_per_hour,
    )
