"""PNG figures for the evaluation report (matplotlib's Agg canvas, no display needed).

matplotlib is imported inside each function so that importing ``tuneforge.eval`` stays cheap.
Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas instead of pyplot: no global
backend switch (which would close other code's pyplot figures), no figure registry to leak, and
it works headless.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["comparison_bar_png", "confusion_matrix_png", "order_labels"]

ANNOTATE_MAX = 20  # counts are written in the cells up to this many classes
CELL_INCHES = 0.17  # per class, for many classes: 77 classes → a ~13-inch matrix
DPI = 150  # 6-pt tick labels are ~12 px tall at this dpi: legible, file stays < 1 MB
OTHER = "(other)"  # column for predictions outside the label set (invalid generations)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path, dpi: int) -> Path:
    """Save through a temp name and rename, so a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _confusion_counts(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, bool]:
    """Counts matrix (rows gold, cols pred) over ``labels`` (+ an ``OTHER`` column if needed)."""
    index = {label: i for i, label in enumerate(labels)}
    has_other = any(p not in index for p in pred)
    counts = np.zeros((len(labels), len(labels) + has_other), dtype=int)
    for g, p in zip(gold, pred, strict=True):
        if g in index:
            counts[index[g], index.get(p, len(labels))] += 1
    return counts, has_other


def order_labels(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Order labels so that classes confused with each other sit next to each other.

    Average-linkage clustering on the symmetrised row-normalised confusion (distance
    ``1 − (C[i,j] + C[j,i]) / 2``) with optimal leaf ordering, which places each off-diagonal
    block of mistakes next to the diagonal where the eye finds it. Labels are sorted
    alphabetically first, so ties (classes never confused) come out alphabetical and the order is
    deterministic.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    labels = sorted(labels)
    if len(labels) < 3:
        return labels
    counts, _ = _confusion_counts(gold, pred, labels)
    counts = counts[:, : len(labels)].astype(float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    sim = (norm + norm.T) / 2
    dist = 1.0 - sim
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(np.clip(dist, 0.0, 1.0), checks=False)
    tree = optimal_leaf_ordering(linkage(condensed, method="average"), condensed)
    return [labels[i] for i in leaves_list(tree)]


def confusion_matrix_png(
    gold: list[str],
    pred: list[str],
    labels: list[str],
    path: str | Path,
    title: str = "",
    order: str = "auto",
) -> Path:
    """Row-normalised confusion matrix (rows: gold, columns: predicted) as a PNG.

    Made to stay readable at Banking77's 77 classes: the figure grows with the number of
    classes (~0.17 in per class), tick labels are small (6 pt for > 40 classes) but saved at
    150 dpi, every class is named on both axes, and a square-root colour scale (with colorbar)
    keeps a 3 % confusion visible next to a 90 % diagonal. Diagonal cells are outlined so the
    diagonal stays visible even where a class is never right. Counts are written into cells
    only up to 20 classes. Predictions outside ``labels`` get a final "(other)" column so rows
    still sum to 1.

    ``order``: ``"auto"`` keeps ``labels`` as given up to 20 classes and clusters above that
    (see :func:`order_labels`); ``"cluster"``, ``"alpha"`` or ``"given"`` force one.
    """
    from matplotlib import colormaps
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    path = Path(path)
    labels = list(dict.fromkeys(labels))
    n_labels = len(labels)
    if order == "auto":
        order = "cluster" if n_labels > ANNOTATE_MAX else "given"
    if order == "cluster":
        labels = order_labels(gold, pred, labels)
    elif order == "alpha":
        labels = sorted(labels)
    elif order != "given":
        raise ValueError(f"order must be auto, cluster, alpha or given, not {order!r}")
    counts, has_other = _confusion_counts(gold, pred, labels)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.full(counts.shape, np.nan), where=rows > 0)

    many = n_labels > ANNOTATE_MAX
    side = max(4.0, CELL_INCHES * n_labels) if many else max(4.0, 0.55 * n_labels + 1.5)
    fontsize = 6 if n_labels > 40 else 8 if many else 9
    fig = _figure(side + 1.5, side)
    ax = fig.subplots()
    cmap = colormaps["Blues"].with_extremes(bad="#f4f4f4")  # bad: gold class absent from test
    image = ax.imshow(
        np.ma.masked_invalid(norm),
        cmap=cmap,
        norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0),
        interpolation="nearest",
        aspect="equal",
    )
    cols = [*labels, OTHER] if has_other else labels
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n_labels))
    ax.set_yticklabels(labels, fontsize=fontsize)
    ax.tick_params(length=2, pad=1)
    ax.set_xlabel("predicted", fontsize=fontsize + 2)
    ax.set_ylabel("gold", fontsize=fontsize + 2)
    ax.set_xticks(np.arange(-0.5, len(cols)), minor=True)
    ax.set_yticks(np.arange(-0.5, n_labels), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.3)
    ax.tick_params(which="minor", length=0)
    for i in range(n_labels):
        ax.add_patch(
            Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=0.6)
        )
    if not many:
        for i in range(n_labels):
            for j in range(len(cols)):
                if counts[i, j]:
                    dark = norm[i, j] > 0.45
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=fontsize,
                        color="white" if dark else "black",
                    )
    n = int(counts.sum())
    accuracy = float(np.trace(counts[:, :n_labels])) / n if n else 0.0
    subtitle = f"row-normalised (share of each gold class) · n = {n} · accuracy {accuracy:.1%}"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=fontsize + 3)
    bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.02)
    bar.set_ticks([0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=fontsize + 1)
    bar.set_label("share of gold class (√ scale)", fontsize=fontsize + 1)
    return _save(fig, path, DPI)


def comparison_bar_png(
    variants: dict[str, tuple[float, float, float]], path: str | Path, metric_name: str
) -> Path:
    """Bar per variant (``name → (value, ci_lo, ci_hi)``) with 95 % CI error bars.

    The tuned model is drawn in a distinct colour and each bar is labelled with its value, so
    the answer to "did fine-tuning help?" is visible at a glance, together with whether the
    intervals overlap. Variants keep the given order.
    """
    path = Path(path)
    names = list(variants)
    values = np.array([float(variants[k][0]) for k in names])
    lo = np.array([float(variants[k][1]) for k in names])
    hi = np.array([float(variants[k][2]) for k in names])
    errors = np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)])
    colors = ["#d62728" if name == "tuned" else "#4c72b0" for name in names]
    fig = _figure(max(4.5, 1.3 * len(names) + 1.5), 4.0)
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x, values, color=colors, width=0.6, yerr=errors, capsize=5, ecolor="#333333")
    top = float(np.max(hi, initial=0.0))
    for xi, v, h in zip(x, values, hi, strict=True):
        ax.text(xi, max(v, h) + 0.01 * max(top, 1e-9), f"{v:.3f}", ha="center", va="bottom")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=15 if len(names) > 4 else 0)
    ax.set_ylabel(metric_name)
    if float(np.min(lo, initial=0.0)) >= 0 and top <= 1.0:
        ax.set_ylim(0, 1.08)
    ax.set_title(f"{metric_name} with 95 % bootstrap CI")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, DPI)
