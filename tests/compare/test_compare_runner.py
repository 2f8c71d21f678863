"""The comparison on the tiny model: summary contents, resumption, budget, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from compare_helpers import LORA_CONFIG

from tuneforge.compare.plan import plan_comparison
from tuneforge.compare.runner import EvalOptions, run_comparison, variant_state
from tuneforge.errors import TuneforgeError
from tuneforge.eval.run import evaluate


def _plan(overrides, out: Path, grid=("lora.r=2,4",), **kwargs):
    opts = EvalOptions(baselines=["zero"], batch_size=8)
    return plan_comparison(LORA_CONFIG, overrides, list(grid), out, opts, **kwargs)


def _counting_evaluator(calls: list[str]):
    from tuneforge.eval.run import evaluate

    def evaluator(run_dir, *args, **kwargs):
        calls.append(Path(run_dir).name)
        return evaluate(run_dir, *args, **kwargs)

    return evaluator


def test_compare_writes_summary_and_does_not_rerun_finished_variants(
    overrides, tmp_path, inprocess_trainer, trainer_calls
):
    out = tmp_path / "cmp"
    evals: list[str] = []
    summary = run_comparison(
        _plan(overrides, out), trainer=inprocess_trainer, evaluator=_counting_evaluator(evals),
        log=lambda _: None,
    )  # fmt: skip
    assert trainer_calls == [("r2", "fresh"), ("r4", "fresh")]
    assert evals == ["r2", "r4"]

    # summary.json: one row per variant with the measured columns, the baseline row once.
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["winner"] == summary["winner"]
    rows = {r["name"]: r for r in on_disk["rows"]}
    assert set(rows) == {"r2", "r4", "prompt-only: zero-shot"}
    metrics = json.loads((out / "runs" / "r2" / "eval" / "metrics.json").read_text())
    tuned = metrics["variants"]["tuned"]
    assert rows["r2"]["metric"] == tuned["accuracy"]
    assert rows["r2"]["metric_ci"] == tuned["accuracy_ci"]
    manifest = json.loads((out / "runs" / "r4" / "manifest.json").read_text())
    assert rows["r4"]["trainable_parameters"] == manifest["parameters"]["trainable"]
    assert rows["r4"]["trainable_parameters"] > rows["r2"]["trainable_parameters"]
    assert rows["r4"]["final_train_loss"] == manifest["result"]["final_train_loss"]
    assert rows["r4"]["peak_memory_bytes"] == manifest["peak_memory_bytes"]["rss"]
    adapter = out / "runs" / "r4" / "adapter_model.safetensors"
    assert rows["r4"]["weights_bytes"] == adapter.stat().st_size
    for column in ("val_loss", "train_seconds", "examples_per_second"):
        assert rows["r2"][column] is not None
    baseline = rows["prompt-only: zero-shot"]
    assert baseline["from_eval_of"] == "r2"  # scored once, in the first evaluation
    assert baseline["metric"] == metrics["variants"]["base_zero"]["accuracy"]
    assert (
        "base_zero"
        not in json.loads((out / "runs" / "r4" / "eval" / "metrics.json").read_text())["variants"]
    )
    # The winner is the best point estimate; it is named in summary.md with the table.
    best = max(r["metric"] for r in rows.values())
    assert rows[summary["winner"]]["metric"] == best
    md = (out / "summary.md").read_text()
    assert f"Winner: {summary['winner']}" in md
    assert "| r2 |" in md and "| r4 |" in md and "prompt-only: zero-shot" in md
    assert (out / "quality_vs_time.png").stat().st_size > 0
    assert (out / "quality_vs_memory.png").stat().st_size > 0

    # Run again: nothing is trained or evaluated, the summary is the same.
    mtime = (out / "runs" / "r2" / "manifest.json").stat().st_mtime_ns
    again = run_comparison(
        _plan(overrides, out), trainer=inprocess_trainer, evaluator=_counting_evaluator(evals),
        log=lambda _: None,
    )  # fmt: skip
    assert trainer_calls == [("r2", "fresh"), ("r4", "fresh")]
    assert evals == ["r2", "r4"]
    assert (out / "runs" / "r2" / "manifest.json").stat().st_mtime_ns == mtime
    assert again["winner"] == summary["winner"]
    assert [r.get("metric") for r in again["rows"]] == [r.get("metric") for r in summary["rows"]]


def test_interrupted_variant_resumes_from_its_checkpoint(
    overrides, tmp_path, inprocess_trainer, trainer_calls
):
    out = tmp_path / "cmp"
    comp = _plan([*overrides, "train.max_steps=4", "train.save_every=2"], out, ["lora.r=2"])

    def crashing(config, run_dir, mode, log_file, log):
        inprocess_trainer(config, run_dir, mode, log_file, log)
        (run_dir / "manifest.json").unlink()  # as if killed after its last checkpoint
        return 137

    first = run_comparison(comp, trainer=crashing, log=lambda _: None)
    assert first["failed"] == ["r2"] and first["winner"] != "r2"
    assert "exited with code 137" in first["rows"][0]["reason"]
    run_dir = out / "runs" / "r2"
    assert variant_state(run_dir, run_dir / "eval", comp.eval_opts, comp.expected_n) == "partial"

    second = run_comparison(comp, trainer=inprocess_trainer, log=lambda _: None)
    assert trainer_calls == [("r2", "fresh"), ("r2", "resume")]
    row = second["rows"][0]
    assert row["status"] == "done" and row["actions"] == ["resume", "eval"]
    assert row["steps"] == 4 and row["metric"] is not None


def test_budget_stops_starting_variants_and_lists_them(
    overrides, tmp_path, inprocess_trainer, trainer_calls
):
    ticks = iter([0.0, 0.0, 61.0, 61.0, 61.0])  # start, r2 starts at 0 s, r4 would at 61 s
    comp = _plan(overrides, tmp_path / "cmp", budget_minutes=1)
    summary = run_comparison(
        comp, trainer=inprocess_trainer, log=lambda _: None, clock=lambda: next(ticks)
    )
    assert trainer_calls == [("r2", "fresh")]
    assert summary["skipped"] == ["r4"]
    row = next(r for r in summary["rows"] if r["name"] == "r4")
    assert row["status"] == "skipped" and "budget" in row["reason"]
    assert "r4: skipped: budget" in (tmp_path / "cmp" / "summary.md").read_text()


def test_failed_training_is_reported_and_the_others_still_run(
    overrides, tmp_path, inprocess_trainer, trainer_calls
):
    def flaky(config, run_dir, mode, log_file, log):
        if run_dir.name == "r2":
            return 3
        return inprocess_trainer(config, run_dir, mode, log_file, log)

    summary = run_comparison(_plan(overrides, tmp_path / "cmp"), trainer=flaky, log=lambda _: None)
    assert summary["failed"] == ["r2"]
    assert summary["winner"] in ("r4", "prompt-only: zero-shot")
    # r4 scored the baseline, since r2 never got an evaluation.
    baseline = next(r for r in summary["rows"] if r["kind"] == "baseline")
    assert baseline["from_eval_of"] == "r4"


def test_a_changed_config_is_refused_before_anything_runs(
    overrides, tmp_path, inprocess_trainer, trainer_calls
):
    out = tmp_path / "cmp"
    run_comparison(
        _plan(overrides, out, ["lora.r=2"]), trainer=inprocess_trainer, log=lambda _: None
    )
    with pytest.raises(TuneforgeError, match="different config"):
        _plan([*overrides, "train.lr=5e-3"], out, ["lora.r=2"])
    # --force starts again
    comp = _plan([*overrides, "train.lr=5e-3"], out, ["lora.r=2"], force=True)
    assert not out.exists()
    run_comparison(comp, trainer=inprocess_trainer, log=lambda _: None)
    assert trainer_calls == [("r2", "fresh"), ("r2", "fresh")]


def test_bad_options_fail_before_writing(overrides, tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(TuneforgeError, match="budget-minutes"):
        _plan(overrides, out, budget_minutes=0)
    with pytest.raises(TuneforgeError, match="no such file"):
        _plan(overrides, out, data=tmp_path / "missing.jsonl")
    with pytest.raises(TuneforgeError, match=r"data\.dir is not set"):
        plan_comparison(LORA_CONFIG, [], ["lora.r=2"], out)
    assert not out.exists()


def test_every_evaluation_runs_at_the_chosen_scoring_and_precision(
    overrides, tmp_path, inprocess_trainer
):
    opts = EvalOptions(baselines=[], batch_size=8, scoring="constrained", precision="bf16")
    plan = plan_comparison(LORA_CONFIG, overrides, ["lora.r=2"], tmp_path / "cmp", opts)
    run_comparison(plan, trainer=inprocess_trainer, evaluator=evaluate, log=lambda _: None)
    metrics = json.loads((tmp_path / "cmp" / "runs" / "r2" / "eval" / "metrics.json").read_text())
    assert metrics["scoring"] == "constrained"  # `auto` would pick exact for 4 labels
    assert metrics["precision"] == "bfloat16 matmuls (float32 model)"
