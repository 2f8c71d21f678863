"""Reading run directories (tuneforge.ui.runs), charts and comparison helpers, without a server."""

from __future__ import annotations

import json
import math

import pytest
from ui_helpers import eval_results, write_finished_run, write_json

from tuneforge.ui import charts
from tuneforge.ui.compare import config_diff, read_summary, render_json
from tuneforge.ui.runs import NotFound, read_run, resolve_child, scan, sort_runs


def by_name(runs):
    return {r.name: r for r in runs}


def test_scan_classifies_children(runs_dir):
    found = scan(runs_dir)
    assert sorted(r.name for r in found.runs) == ["corrupt", "good", "partial", "plain"]
    assert found.compares == ["sweep"]
    assert found.skipped == ["data-prepared"]  # a prepare output, not a run; .hidden ignored


def test_finished_run_summary(runs_dir):
    good = by_name(scan(runs_dir).runs)["good"]
    assert good.notes == []
    assert good.status == "finished"
    assert (good.model, good.method, good.weights) == ("tiny-base", "lora", "adapter")
    assert good.steps == 6 and good.final_train_loss == 0.5 and good.val_loss == 0.6
    assert good.wall_seconds == 12.5
    assert (good.peak_memory, good.peak_memory_kind) == (512 * 1024**2, "rss")
    assert good.trainable == 1024 and good.total_params == 100_000
    assert good.finished_at is not None
    assert good.servable
    ev = good.eval
    assert ev is not None
    assert (ev.metric, ev.metric_name, ev.n) == ("accuracy", "accuracy", 20)
    assert ev.tuned == 0.75 and ev.tuned_ci == pytest.approx((0.55, 0.95))
    assert (ev.best_baseline, ev.best_value) == ("base_zero", 0.5)
    assert ev.verdict is not None and ev.verdict.startswith("tuned beats base_zero")


def test_gpu_memory_is_preferred_when_there_was_a_gpu(tmp_path):
    run = write_finished_run(tmp_path, "gpu", evaluated=False)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["peak_memory_bytes"] = {"rss": 10, "cuda_allocated": 20}
    write_json(run / "manifest.json", manifest)
    summary = read_run(run).summary
    assert (summary.peak_memory, summary.peak_memory_kind) == (20, "cuda_allocated")


def test_run_in_progress_reads_its_curves_and_says_it_has_no_manifest(runs_dir):
    detail = read_run(runs_dir / "partial")
    run = detail.summary
    assert run.status == "incomplete"
    assert run.steps == 1 and run.final_train_loss == 2.0  # from metrics.jsonl
    assert any("no manifest.json" in note and "step 1" in note for note in run.notes)
    assert any("1 malformed line" in note for note in run.notes)  # the half-written last line
    assert detail.curves is not None and detail.curves.train_loss == [(1.0, 2.0)]
    assert not run.servable


def test_corrupt_files_become_notes(runs_dir):
    run = read_run(runs_dir / "corrupt").summary
    assert run.status == "broken"
    text = " ".join(run.notes)
    assert "manifest.json: unreadable" in text
    assert "config.yaml: unreadable" in text


def test_eval_metrics_of_an_unexpected_shape_are_a_note(tmp_path):
    run = write_finished_run(tmp_path, "odd", evaluated=False)
    write_json(run / "eval" / "metrics.json", ["not", "a", "report"])
    detail = read_run(run)
    assert detail.summary.eval is None and detail.eval_results is None
    assert any("eval/metrics.json" in note for note in detail.summary.notes)


def test_manifest_fields_of_the_wrong_type_do_not_break_the_row(tmp_path):
    run = write_finished_run(tmp_path, "weird", evaluated=False)
    write_json(
        run / "manifest.json",
        {"result": [1, 2], "parameters": "many", "peak_memory_bytes": 7, "wall_seconds": "x"},
    )
    summary = read_run(run).summary
    assert summary.wall_seconds is None and summary.trainable is None
    assert summary.steps == 6  # from metrics.jsonl instead


def test_full_fine_tune_and_prompt_tuning_are_not_servable(tmp_path):
    full = write_finished_run(tmp_path, "full", evaluated=False)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (full / name).unlink()
    (full / "config.json").write_text("{}")
    (full / "model.safetensors").write_text("")
    assert read_run(full).summary.weights == "full"
    assert not read_run(full).summary.servable
    prompt = write_finished_run(tmp_path, "prompt", evaluated=False)
    (prompt / "config.yaml").write_text("model:\n  name: tiny\nmethod:\n  kind: prompt_tuning\n")
    assert not read_run(prompt).summary.servable


@pytest.mark.parametrize(
    "name", ["..", ".", "", ".hidden", "a/b", "../runs", "good/..", "nope", "x\x00y", "\\good"]
)
def test_resolve_child_refuses_anything_but_a_child_directory(runs_dir, name):
    with pytest.raises(NotFound):
        resolve_child(runs_dir, name)


def test_resolve_child_accepts_a_run(runs_dir):
    assert resolve_child(runs_dir, "good") == runs_dir / "good"


def test_sorting_puts_missing_values_last_both_ways(runs_dir):
    runs = scan(runs_dir).runs
    up = [r.name for r in sort_runs(runs, "metric", descending=False)]
    down = [r.name for r in sort_runs(runs, "metric", descending=True)]
    assert up[0] == "good" and down[0] == "good"  # the only evaluated run
    assert [r.name for r in sort_runs(runs, "name", descending=False)] == sorted(
        ["corrupt", "good", "partial", "plain"]
    )
    assert sort_runs(runs, "no-such-key", True)  # unknown keys fall back to the date


def test_config_diff_lists_only_differences(runs_dir):
    good, plain = read_run(runs_dir / "good"), read_run(runs_dir / "plain")
    diff = config_diff({"good": good.config, "plain": plain.config})
    assert diff == [("train.lr", ["0.001", "0.002"])]
    assert config_diff({"a": {"x": 1}, "b": None}) == [("x", ["1", "(unset)"])]


def test_compare_summary_is_read_and_links_known_runs(runs_dir):
    summary = read_summary(runs_dir / "sweep", ["good", "plain", "other"])
    assert summary.runs == ["good", "plain"]  # named by run_dir paths and by name
    assert summary.images == ["quality_vs_time.png"]
    assert summary.markdown.startswith("# Comparison")
    html = render_json(summary.data, lambda text: "/runs/good" if text == "good" else None)
    assert '<a href="/runs/good">good</a>' in html
    assert "<table" in html and "train.lr" in html


def test_compare_summary_that_is_not_json_is_a_note(tmp_path):
    (tmp_path / "summary.json").write_text("{oops")
    summary = read_summary(tmp_path, [])
    assert summary.data is None and "summary.json: unreadable" in summary.notes[0]


def test_render_json_escapes_strings():
    html = render_json({"<k>": ["<script>", {"a": "&"}]})
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;k&gt;" in html


def test_nice_ticks_are_round_and_cover_the_range():
    assert charts.nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ticks = charts.nice_ticks(0.13, 7.9)
    assert all(0.13 <= t <= 7.9 for t in ticks) and len(ticks) >= 3
    assert charts.nice_ticks(5, 5) == [5]


def test_line_chart_draws_each_series_and_drops_non_finite_points():
    svg = charts.line_chart(
        [
            charts.Series("train", [(1, 2.0), (2, math.nan), (3, 1.0)]),
            charts.Series("val <b>", [(2, 1.5)]),
            charts.Series("empty", []),
        ],
        title="loss",
        x_label="step",
        y_label="loss",
        chart_id="c",
    )
    assert svg.startswith('<svg class="chart" id="c"')
    assert 'data-series="train" data-points="2"' in svg
    assert 'data-series="val &lt;b&gt;" data-points="1"' in svg
    assert "empty" not in svg


def test_line_chart_without_data_says_so():
    html = charts.line_chart([charts.Series("x", [])], title="lr", x_label="s", y_label="v")
    assert "<svg" not in html and "nothing logged yet" in html


def test_long_series_are_thinned_keeping_the_last_point():
    points = [(float(i), float(i)) for i in range(10_000)]
    svg = charts.line_chart([charts.Series("s", points)], title="t", x_label="x", y_label="y")
    assert f'data-points="{charts.MAX_POINTS}"' in svg


def test_eval_results_fixture_matches_what_the_report_reads():
    # The hand-written fixture must stay renderable by the real report code.
    from tuneforge.eval.verdict import verdict

    assert verdict(eval_results("r")).startswith("tuned beats base_zero")
