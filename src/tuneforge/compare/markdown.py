"""summary.md: the verdict, the table of variants and baselines, what was skipped, the plots."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    "variant",
    "metric [95 % CI]",
    "train loss",
    "val loss",
    "train time",
    "examples/s",
    "peak memory",
    "trainable params",
    "weights size",
    "cost",
    "status",
)


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _bytes(value: Any) -> str:
    if value is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def _metric(row: dict[str, Any]) -> str:
    if row.get("metric") is None:
        return "–"
    text = f"{100 * row['metric']:.1f}"
    ci = row.get("metric_ci")
    return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _cost(row: dict[str, Any]) -> str:
    if row.get("cost_usd") is not None:
        return f"${row['cost_usd']:.4f}"
    return _num(row.get("train_seconds"), "{:.0f} s")


def _status(row: dict[str, Any]) -> str:
    if row["kind"] == "baseline":
        return f"scored in {row['from_eval_of']}'s eval"
    status = row["status"]
    if row.get("reason"):
        status += f": {row['reason']}"
    elif row["status"] == "done" and not row.get("actions"):
        status += " (earlier run)"
    return status.replace("|", "/").replace("\n", " ")


def _cells(row: dict[str, Any], winner: str | None) -> list[str]:
    name = f"**{row['name']}**" if row["name"] == winner else row["name"]
    return [
        name,
        _metric(row),
        _num(row.get("final_train_loss"), "{:.4f}"),
        _num(row.get("val_loss"), "{:.4f}"),
        _num(row.get("train_seconds") if row["kind"] != "baseline" else None, "{:.0f} s"),
        _num(row.get("examples_per_second"), "{:.2f}"),
        _bytes(row.get("peak_memory_bytes")),
        _num(row.get("trainable_parameters"), "{:,}"),
        _bytes(row.get("weights_bytes")),
        _cost(row),
        _status(row),
    ]


def render(summary: dict[str, Any]) -> str:
    metric = summary["metric_name"]
    lines = [
        "# tuneforge compare",
        "",
        f"Config `{summary['config']}`"
        + (f" with `{' '.join(summary['overrides'])}`" if summary["overrides"] else "")
        + f"; grid `{' '.join(summary['grid']) or '(none)'}`.",
        f"Every row is scored on the same {summary['test_examples']} test examples of "
        f"`{summary['test_data']}`; metric: {metric} (percent, 95 % bootstrap interval).",
        "",
        f"**{summary['verdict']}**",
        "",
        "| " + " | ".join(c.replace("metric", metric) for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in summary["rows"]:
        lines.append("| " + " | ".join(_cells(row, summary["winner"])) + " |")
    lines += [
        "",
        "How to read it: the winner has the highest point estimate; an exact tie goes to the "
        "shorter training (prompt-only rows train nothing). Train time is the training loop's "
        "wall time (summed over resumes); peak memory is the training process's peak RSS on "
        "CPU, or peak CUDA allocation on a GPU; weights size is the saved adapter (or full "
        "model); cost is "
        + (
            f"train time at ${summary['price_per_hour']:g}/h."
            if summary.get("price_per_hour") is not None
            else "the train time (pass --price-per-hour for dollars)."
        ),
    ]
    if summary["not_separable"]:
        lines.append(
            "Not separable from the winner (95 % intervals overlap): "
            + ", ".join(summary["not_separable"])
            + "."
        )
    skipped = [r for r in summary["rows"] if r["status"] in ("skipped", "failed")]
    if skipped:
        lines += ["", "## Not finished", ""]
        lines += [f"- {r['name']}: {r['status']}: {r.get('reason') or ''}" for r in skipped]
    for name, file in (summary.get("plots") or {}).items():
        lines += ["", f"![{name.replace('_', ' ')}]({file})"]
    return "\n".join(lines) + "\n"
