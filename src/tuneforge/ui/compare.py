"""Comparisons: of runs picked in the dashboard, and of `tuneforge compare` summaries on disk.

A `tuneforge compare` output directory holds summary.json and summary.md. Its JSON layout is
not assumed: it is rendered generically (mappings as key/value tables, lists of records as
tables), and any string naming a run of the dashboard becomes a link to that run.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from tuneforge.config import flat_keys
from tuneforge.ui import charts
from tuneforge.ui import templates as fmt
from tuneforge.ui.readers import read_json
from tuneforge.ui.runs import RunDetail, metric_value

MAX_DEPTH = 6
MAX_ITEMS = 200
MAX_MARKDOWN_BYTES = 512 * 1024


@dataclass
class CompareSummary:
    name: str
    path: Path
    data: Any = None
    markdown: str | None = None
    images: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    """Names of the dashboard's runs that the summary mentions, in order of appearance."""


def _strings(value: Any, depth: int = 0) -> Iterable[str]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value[:MAX_ITEMS]:
            yield from _strings(item, depth + 1)


def read_summary(path: Path, known_runs: Iterable[str]) -> CompareSummary:
    summary = CompareSummary(name=path.name, path=path)
    summary.data = read_json(path / "summary.json", summary.notes)
    md = path / "summary.md"
    if md.is_file():
        try:
            text = md.read_bytes()[:MAX_MARKDOWN_BYTES].decode("utf-8", errors="replace")
            summary.markdown = text
        except OSError as exc:
            summary.notes.append(f"summary.md: unreadable ({exc})")
    summary.images = sorted(p.name for p in path.glob("*.png") if p.is_file())
    known = set(known_runs)
    seen: dict[str, None] = {}
    for text in _strings(summary.data):
        # A run may be named as such, or by its path (runs/NAME, /abs/runs/NAME/).
        candidate = Path(text.rstrip("/")).name if "/" in text else text
        if candidate in known:
            seen.setdefault(candidate)
    summary.runs = list(seen)
    return summary


def _scalar(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def render_json(value: Any, link_run: Any = None, depth: int = 0) -> Markup:
    """Generic HTML for JSON: mappings -> key/value tables, lists of mappings -> tables.

    `link_run(text) -> url | None` turns strings naming a known run into links.
    """
    esc = html.escape

    def text(item: Any) -> str:
        shown = esc(_scalar(item))
        if link_run is not None and isinstance(item, str) and (url := link_run(item)):
            return f'<a href="{esc(url)}">{shown}</a>'
        return shown

    if depth > MAX_DEPTH:
        return Markup("…")
    if isinstance(value, dict):
        if not value:
            return Markup("{}")
        rows = "".join(
            f"<tr><th>{esc(str(k))}</th><td>{render_json(v, link_run, depth + 1)}</td></tr>"
            for k, v in list(value.items())[:MAX_ITEMS]
        )
        return Markup(f'<table class="kv">{rows}</table>')
    if isinstance(value, list):
        if not value:
            return Markup("–")
        items = value[:MAX_ITEMS]
        more = f" … (+{len(value) - MAX_ITEMS})" if len(value) > MAX_ITEMS else ""
        if items and all(isinstance(i, dict) for i in items):
            columns = list(dict.fromkeys(k for i in items for k in i))
            head = "".join(f"<th>{esc(str(c))}</th>" for c in columns)
            body = "".join(
                "<tr>"
                + "".join(f"<td>{render_json(i.get(c), link_run, depth + 1)}</td>" for c in columns)
                + "</tr>"
                for i in items
            )
            return Markup(
                f'<div class="scroll"><table class="report"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>{esc(more)}"
            )
        if all(not isinstance(i, dict | list) for i in items):
            return Markup(", ".join(text(i) for i in items) + esc(more))
        return Markup(
            "<ol>"
            + "".join(f"<li>{render_json(i, link_run, depth + 1)}</li>" for i in items)
            + f"</ol>{esc(more)}"
        )
    return Markup(text(value))


def sections(data: Any) -> tuple[Any, list[tuple[str, list[dict[str, Any]]]]]:
    """(the rest, [(key, records)]): top-level lists of records get a full-width table each.

    Nested in a key/value table, a wide table (compare's rows) would stretch the whole page.
    """
    if not isinstance(data, dict):
        return data, []
    tables = [
        (key, value)
        for key, value in data.items()
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    ]
    named = {key for key, _ in tables}
    return {k: v for k, v in data.items() if k not in named}, tables


def config_diff(configs: dict[str, dict[str, Any] | None]) -> list[tuple[str, list[str]]]:
    """[(key, [value per run])] for the config keys whose values differ between the runs."""
    flat = [flat_keys(cfg) for cfg in configs.values()]
    rows = []
    for key in sorted({k for f in flat for k in f}):
        values = [repr(f[key]) if key in f else None for f in flat]
        if len(set(values)) > 1:
            rows.append((key, [_scalar(f[key]) if key in f else "(unset)" for f in flat]))
    return rows


def comparison(details: list[RunDetail], chart_width: int = 580) -> dict[str, Any]:
    """Table rows, overlaid curves and the config diff for runs side by side."""
    summaries = [d.summary for d in details]

    def eval_cell(run: Any, variant: str) -> str:
        results = next(d.eval_results for d in details if d.summary is run) or {}
        if run.eval is None:
            return "–"
        value, interval = metric_value(
            (results.get("variants") or {}).get(variant), run.eval.metric
        )
        if value is None:
            return "–"
        return f"{fmt.pct(value)}" + (f" ({fmt.ci(interval)})" if interval else "")

    variants: list[str] = []
    for d in details:
        for name in (d.eval_results or {}).get("variants") or {}:
            if name not in variants:
                variants.append(name)
    rows: list[tuple[str, list[str]]] = [
        ("model", [fmt.shortmodel(r.model) for r in summaries]),
        ("method", [r.method or "–" for r in summaries]),
        ("status", [r.status for r in summaries]),
        ("steps", [fmt.intf(r.steps) for r in summaries]),
        ("final train loss", [fmt.loss(r.final_train_loss) for r in summaries]),
        ("best val loss", [fmt.loss(r.val_loss) for r in summaries]),
        ("trainable parameters", [fmt.intf(r.trainable) for r in summaries]),
        ("wall time", [fmt.duration(r.wall_seconds) for r in summaries]),
        ("peak memory", [fmt.size(r.peak_memory) for r in summaries]),
        ("eval metric", [r.eval.metric_name if r.eval else "–" for r in summaries]),
        ("test examples", [fmt.intf(r.eval.n) if r.eval else "–" for r in summaries]),
    ]
    rows += [(f"{v} (95 % CI)", [eval_cell(r, v) for r in summaries]) for v in variants]
    rows.append(("verdict", [(r.eval.verdict or "–") if r.eval else "–" for r in summaries]))

    loss_series, lr_series = [], []
    for i, d in enumerate(details):
        color = charts.PALETTE[i % len(charts.PALETTE)]
        if d.curves is None:
            continue
        loss_series.append(charts.Series(f"{d.summary.name} train", d.curves.train_loss, color))
        if d.curves.val_loss:
            loss_series.append(
                charts.Series(f"{d.summary.name} val", d.curves.val_loss, color, dashed=True)
            )
        lr_series.append(charts.Series(d.summary.name, d.curves.lr, color))
    return {
        "rows": rows,
        "loss_chart": charts.line_chart(
            loss_series,
            title="loss",
            x_label="step",
            y_label="loss",
            chart_id="loss-chart",
            width=chart_width,
        ),
        "lr_chart": charts.line_chart(
            lr_series,
            title="learning rate",
            x_label="step",
            y_label="lr",
            chart_id="lr-chart",
            width=chart_width,
        ),
        "diff": config_diff({d.summary.name: d.config for d in details}),
    }
