"""The winner rule and its verdict, on hand-made rows (no training)."""

from __future__ import annotations

from tuneforge.compare.markdown import render
from tuneforge.compare.summary import decide, rank


def row(name, metric, ci=None, seconds=10.0, kind="fine-tune"):
    return {"name": name, "kind": kind, "metric": metric, "metric_ci": ci, "train_seconds": seconds}


def test_highest_metric_wins_and_exact_ties_go_to_the_cheaper_row():
    rows = [
        row("r64", 0.80, [0.70, 0.90], seconds=300),
        row("r16", 0.80, [0.70, 0.90], seconds=100),
        row("r4", 0.60, [0.50, 0.65], seconds=50),
        row("failed", None),
    ]
    assert [r["name"] for r in rank(rows)] == ["r16", "r64", "r4"]
    result = decide(rows, "accuracy")
    assert result["winner"] == "r16"
    assert result["not_separable"] == ["r64"]  # r4's interval ends below the winner's
    assert result["cheapest_not_separable"] is None  # r64 costs more than the winner
    assert result["verdict"].startswith("Winner: r16 (accuracy 80.0 %).")


def test_a_cheaper_variant_within_the_interval_is_named():
    rows = [row("r64", 0.82, [0.72, 0.90], seconds=300), row("r4", 0.78, [0.70, 0.86], seconds=50)]
    result = decide(rows, "accuracy")
    assert result["winner"] == "r64" and result["cheapest_not_separable"] == "r4"
    assert "r4 is cheaper and not separable" in result["verdict"]


def test_prompt_only_winning_is_said_plainly():
    rows = [
        row("r4", 0.30, [0.2, 0.4]),
        row("prompt-only: few-shot", 0.55, [0.45, 0.65], seconds=0.0, kind="baseline"),
    ]
    result = decide(rows, "accuracy")
    assert result["winner"] == "prompt-only: few-shot"
    assert "fine-tuning did not pay off" in result["verdict"]
    # A tie between a variant and prompting goes to prompting: it trains nothing.
    tie = [row("r4", 0.5), row("prompt-only: zero-shot", 0.5, seconds=0.0, kind="baseline")]
    assert decide(tie, "accuracy")["winner"] == "prompt-only: zero-shot"


def test_a_winner_level_with_prompting_is_flagged():
    rows = [
        row("r4", 0.60, [0.50, 0.70]),
        row("prompt-only: zero-shot", 0.55, [0.45, 0.65], seconds=0.0, kind="baseline"),
    ]
    assert "not clearly better than prompting" in decide(rows, "accuracy")["verdict"]


def test_no_finished_variant_means_no_winner_in_the_markdown():
    rows = [{**row("r4", None), "status": "skipped", "reason": "budget: 61.0 of 60 min spent"}]
    result = decide(rows, "accuracy")
    assert result["winner"] is None and result["verdict"].startswith("No winner")
    summary = {
        "config": "c.yaml", "overrides": [], "grid": ["lora.r=4"], "test_data": "t.jsonl",
        "test_examples": 10, "metric_name": "accuracy", "rows": rows, "plots": {}, **result,
    }  # fmt: skip
    md = render(summary)
    assert "**No winner: no variant finished" in md
    assert "- r4: skipped: budget: 61.0 of 60 min spent" in md
