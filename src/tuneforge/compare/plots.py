"""Quality vs cost scatter plots for the comparison (matplotlib Agg, PNG).

Fine-tuned variants are points with their 95 % interval as a vertical bar; prompt-only
baselines cost no training, so they are horizontal lines at their score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.eval.plots import DPI, _figure, _save

PLOTS = {
    "quality_vs_time": ("train_seconds", 1.0, "training wall time (s)"),
    "quality_vs_memory": ("peak_memory_bytes", 1 / 2**30, "peak memory (GiB)"),
}


def quality_plots(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write quality_vs_time.png and quality_vs_memory.png; {} when nothing is scored yet."""
    rows = [r for r in summary["rows"] if r.get("metric") is not None]
    if not rows:
        return {}
    written = {}
    for name, (field, scale, xlabel) in PLOTS.items():
        path = out_dir / f"{name}.png"
        _scatter(rows, field, scale, xlabel, summary, path)
        written[name] = path
    return written


def _scatter(
    rows: list[dict[str, Any]],
    field: str,
    scale: float,
    xlabel: str,
    summary: dict[str, Any],
    path: Path,
) -> None:
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    winner = summary.get("winner")
    baselines = 0
    for row in rows:
        y = 100 * row["metric"]
        if row["kind"] == "baseline":
            ax.axhline(y, linestyle="--", linewidth=1, color="grey")
            # Staggered along the line, so equal scores do not print on top of each other.
            ax.annotate(
                row["name"], (0.02 + 0.33 * (baselines % 3), y),
                xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                xytext=(0, 2), textcoords="offset points",
            )  # fmt: skip
            baselines += 1
            continue
        if row.get(field) is None:
            continue
        x = row[field] * scale
        ci = row.get("metric_ci")
        err = [[y - 100 * ci[0]], [100 * ci[1] - y]] if ci else None
        color = "tab:red" if row["name"] == winner else "tab:blue"
        ax.errorbar([x], [y], yerr=err, fmt="o", color=color, capsize=3)
        ax.annotate(row["name"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{summary['metric_name']} (%)")
    ax.set_title(f"{summary['metric_name']} vs {xlabel.split(' (')[0]} (red: winner)", fontsize=9)
    ax.grid(alpha=0.3)
    _save(fig, path, DPI)
