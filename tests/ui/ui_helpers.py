"""Builders for the dashboard tests: hand-written run directories, real tiny runs, a live server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import keyword_task
from keyword_task import LABELS, cls_row, write_jsonl
from tuneforge.serve import server as server_module

# A valid 1x1 PNG: the dashboard serves figures, it never decodes them.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
    return path


def eval_results(run: str, tuned: float = 0.75, zero: float = 0.5) -> dict[str, Any]:
    """A classification eval/metrics.json as `tuneforge eval` writes it (the fields the report
    reads), with a tuned model better than zero-shot."""

    def variant(acc: float) -> dict[str, Any]:
        return {
            "accuracy": acc,
            "accuracy_ci": [acc - 0.2, min(acc + 0.2, 1.0)],
            "macro_f1": acc - 0.05,
            "macro_f1_ci": [acc - 0.25, acc + 0.1],
            "per_class": {label: {"precision": acc, "recall": acc, "f1": acc, "support": 5} for label in LABELS},
            "invalid_rate": 0.0,
            "prompt_tokens": 40.0,
            "seconds": 0.5,
        }  # fmt: skip

    example = {
        "index": 3,
        "text": "What is oak? <b>bold</b>",
        "gold": "tree",
        "pred": "fruit",
        "other_pred": "tree",
        "confidence": 0.93,
    }
    return {
        "task": "classification",
        "run": run,
        "n": 20,
        "labels": LABELS,
        "variants": {"tuned": variant(tuned), "base_zero": variant(zero)},
        "comparisons": {
            "base_zero": {
                "metric": "accuracy",
                "mcnemar": {"a_only": 1, "b_only": 6, "p_value": 0.01, "method": "exact"},
                "difference": {"diff": tuned - zero, "lo": 0.05, "hi": 0.45},
            }
        },
        "confusions": [{"gold": "tree", "pred": "fruit", "count": 2, "share_of_gold": 0.4}],
        "flipped": {"vs": "base_zero", "fixed": [dict(example, pred="tree")], "broken": [example]},
        "worst": [example],
        "perplexity": {"answer": 3.2, "sequence": 9.1},
        "forgetting": None,
        "prompts": None,
        "model": "tiny",
        "method": "lora",
        "notes": [],
    }


def metrics_lines(steps: int, val_every: int = 2) -> str:
    lines = []
    for step in range(1, steps + 1):
        record: dict[str, Any] = {
            "step": step,
            "train/loss": 3.0 / step,
            "train/lr": 1e-3 * (1 - step / (steps + 1)),
            "train/examples_per_s": 100.0,
        }
        if step % val_every == 0:
            record["val/loss"] = 3.2 / step
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def config_yaml(model: str = "tiny-base", method: str = "lora", lr: float = 1e-3) -> str:
    return (
        f"model:\n  name: {model}\n  max_seq_len: 512\ndata:\n  dir: /nowhere/data\n"
        f"method:\n  kind: {method}\n  r: 16\ntrain:\n  lr: {lr}\n  max_steps: 6\n"
    )


def manifest(name: str, steps: int = 6, memory: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "run": name,
        "method": "lora",
        "model": {"name": "tiny-base", "sha256": None},
        "parameters": {"trainable": 1024, "total": 100_000},
        "result": {"steps": steps, "final_train_loss": 0.5, "best_val_loss": 0.6},
        "wall_seconds": 12.5,
        "peak_memory_bytes": memory or {"rss": 512 * 1024**2},
    }


def write_finished_run(root: Path, name: str, *, evaluated: bool = True, lr: float = 1e-3) -> Path:
    """A complete-looking run written by hand (no weights are loaded from it)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_yaml(lr=lr), encoding="utf-8")
    write_json(run / "manifest.json", manifest(name))
    (run / "metrics.jsonl").write_text(metrics_lines(6), encoding="utf-8")
    for filename in ADAPTER_FILES:
        (run / filename).write_text("{}", encoding="utf-8")
    (run / "loss.png").write_bytes(PNG)
    if evaluated:
        write_json(run / "eval" / "metrics.json", eval_results(str(run)))
        (run / "eval" / "confusion_tuned.png").write_bytes(PNG)
        (run / "eval" / "report.html").write_text("<html>report</html>", encoding="utf-8")
    return run


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def write_compare_dir(path: Path, runs: list[str]) -> Path:
    """A `tuneforge compare` output: summary.json (the fields it writes), summary.md, a plot."""
    rows = [
        {
            "name": name,
            "kind": "fine-tune",
            "settings": {"train.lr": 1e-3 * (i + 1)},
            "status": "done",
            "run_dir": f"/somewhere/runs/{name}",
            "metric": 0.7 + 0.05 * i,
            "metric_ci": [0.6, 0.9],
        }
        for i, name in enumerate(runs)
    ]
    write_json(
        path / "summary.json",
        {
            "metric": "accuracy",
            "metric_name": "accuracy",
            "rows": rows,
            "winner": runs[-1],
            "verdict": f"Winner: {runs[-1]} (accuracy 75.0 %).",
            "plots": {"quality_vs_time": "quality_vs_time.png"},
        },
    )
    (path / "summary.md").write_text("# Comparison\n\nWinner: see the table.\n", encoding="utf-8")
    (path / "quality_vs_time.png").write_bytes(PNG)
    return path


# ---------------------------------------------------------------------------------------------
# real tiny runs
# ---------------------------------------------------------------------------------------------


def prepared_data(directory: Path) -> Path:
    write_jsonl(directory / "train.jsonl", [cls_row(i) for i in range(16)])
    write_jsonl(directory / "val.jsonl", [cls_row(i) for i in range(50, 54)])
    write_jsonl(directory / "test.jsonl", [cls_row(i) for i in range(100, 108)])
    (directory / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    return directory


def train_tiny_run(run: Path, model_dir: Path, data_dir: Path, *overrides: str) -> Path:
    """A real `tuneforge train` run on the tiny model (rank 4, lr 2e-4), validated every 2 steps."""
    return keyword_task.train_tiny_run(
        run, model_dir, data_dir, "method.r=4", "train.lr=2e-4", "train.eval_every=2", *overrides
    )


free_socket = server_module.free_socket
running_server = server_module.background_server
