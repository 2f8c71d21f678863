"""Read a directory of runs into plain dataclasses for the dashboard.

Everything here is defensive: a run directory is whatever is on disk, possibly half-written by a
training still in progress, stopped, or edited by hand. A problem with one file becomes a note
on that run (shown on its row and page), never an exception, so one broken run cannot take the
dashboard down. Only `resolve_child` raises, for names that are not direct children of the root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.ui.readers import (
    Curves,
    as_float,
    as_int,
    as_str,
    get_in,
    read_curves,
    read_json,
    read_yaml,
    short_error,
)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
SERVABLE_METHODS = ("lora", "qlora", "dora")
"""Methods `tuneforge serve` can put beside the base (see serve/registry.py)."""
# What `tuneforge train` writes first. Not manifest.json: a `tuneforge prepare` output has one too.
_RUN_MARKERS = ("config.yaml", "metrics.jsonl", "adapter_config.json")


class NotFound(TuneforgeError):
    """A run or file name that is not in the runs directory (the app answers 404)."""


def resolve_child(root: Path, name: str) -> Path:
    """`root/name` if `name` is a plain directory name present in `root`; NotFound otherwise.

    Names come from URLs: no separators, no dot-names (so no `..`, no hidden directories), and
    the entry must exist as a directory directly under `root`.
    """
    if (
        not name
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or len(name) > 255
    ):
        raise NotFound(f"{name!r} is not a run name")
    path = root / name
    if not path.is_dir():
        raise NotFound(f"no run named {name!r} in {root}")
    return path


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSummary:
    """The headline of RUN/eval/metrics.json: the tuned score on the primary metric and the best
    baseline's."""

    metric: str
    metric_name: str
    task: str | None
    n: int | None
    tuned: float | None
    tuned_ci: tuple[float, float] | None
    best_baseline: str | None
    best_value: float | None
    verdict: str | None


def metric_value(variant: Any, key: str) -> tuple[float | None, tuple[float, float] | None]:
    """(value, (lo, hi) or None) of `key` in an eval variant; JSON scores sit under "json"."""
    if not isinstance(variant, dict):
        return None, None
    block = variant.get("json") if key.startswith("field_") or key == "valid_rate" else variant
    if not isinstance(block, dict):
        return None, None
    ci = block.get(f"{key}_ci")
    interval = None
    if isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = as_float(ci[0]), as_float(ci[1])
        interval = (lo, hi) if lo is not None and hi is not None else None
    return as_float(block.get(key)), interval


def summarize_eval(results: Any, notes: list[str]) -> EvalSummary | None:
    from tuneforge.eval.verdict import primary_metric, verdict

    if not isinstance(results, dict) or not isinstance(results.get("variants"), dict):
        notes.append("eval/metrics.json: no 'variants' in it; re-run `tuneforge eval`")
        return None
    variants = results["variants"]
    try:
        key, name = primary_metric(results)
    except Exception as exc:  # a hand-edited file: the row still renders
        notes.append(f"eval/metrics.json: {short_error(exc)}")
        return None
    tuned, tuned_ci = metric_value(variants.get("tuned"), key)
    scored = [
        (value, name_)
        for name_, variant in variants.items()
        if name_ != "tuned" and (value := metric_value(variant, key)[0]) is not None
    ]
    best_value, best = max(scored) if scored else (None, None)
    try:
        text: str | None = verdict(results)
    except Exception:  # the verdict needs well-formed comparisons; the numbers do not
        text = None
    n = results.get("n")
    return EvalSummary(
        metric=key,
        metric_name=name,
        task=results.get("task") if isinstance(results.get("task"), str) else None,
        n=n if isinstance(n, int) else None,
        tuned=tuned,
        tuned_ci=tuned_ci,
        best_baseline=best,
        best_value=best_value,
        verdict=text,
    )


@dataclass
class RunSummary:
    """One row of the runs list."""

    name: str
    path: Path
    notes: list[str] = field(default_factory=list)
    status: str = "finished"
    """finished | incomplete (no manifest yet) | broken (nothing usable)."""
    model: str | None = None
    method: str | None = None
    weights: str | None = None
    """adapter | full | None (no weights saved yet)."""
    finished_at: float | None = None
    steps: int | None = None
    final_train_loss: float | None = None
    val_loss: float | None = None
    wall_seconds: float | None = None
    peak_memory: int | None = None
    peak_memory_kind: str | None = None
    trainable: int | None = None
    total_params: int | None = None
    eval: EvalSummary | None = None

    @property
    def servable(self) -> bool:
        """Whether the playground can serve it as an adapter beside its base."""
        return self.weights == "adapter" and self.method in SERVABLE_METHODS and bool(self.model)


@dataclass
class RunDetail:
    """Everything the run page shows."""

    summary: RunSummary
    config: dict[str, Any] | None
    config_text: str | None
    manifest: Any
    curves: Curves | None
    eval_results: dict[str, Any] | None
    eval_plots: dict[str, Path]
    has_loss_png: bool
    has_report_html: bool


def _weights(path: Path) -> str | None:
    if all((path / name).is_file() for name in ADAPTER_FILES):
        return "adapter"
    if (path / "config.json").is_file() and (
        (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
    ):
        return "full"
    return None


def _mtime(*paths: Path) -> float | None:
    for path in paths:
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return None


def read_run(path: Path) -> RunDetail:
    """Everything known about the run in `path`; problems become `summary.notes`.

    The readers below already turn each known problem into a note; this last guard covers what
    they did not foresee (a file of an unexpected shape), so one run never breaks a page.
    """
    try:
        return _read_run(path)
    except Exception as exc:
        run = RunSummary(name=path.name, path=path, status="broken")
        run.notes.append(f"could not be read: {type(exc).__name__}: {short_error(exc)}")
        return RunDetail(run, None, None, None, None, None, {}, False, False)


def _read_run(path: Path) -> RunDetail:
    run = RunSummary(name=path.name, path=path)
    notes = run.notes
    config, config_text = read_yaml(path / "config.yaml", notes)
    manifest = read_json(path / "manifest.json", notes)
    if manifest is not None and not isinstance(manifest, dict):
        notes.append("manifest.json: not a JSON object")
        manifest = None
    curves = read_curves(path / "metrics.jsonl", notes)

    run.model = as_str(get_in(config, "model", "name")) or as_str(get_in(manifest, "model", "name"))
    run.method = as_str(get_in(config, "method", "kind")) or as_str(get_in(manifest, "method"))
    run.weights = _weights(path)
    result = get_in(manifest, "result")
    result = result if isinstance(result, dict) else {}
    run.steps = as_int(result.get("steps"))
    run.final_train_loss = as_float(result.get("final_train_loss"))
    run.val_loss = as_float(result.get("best_val_loss"))
    run.wall_seconds = as_float(get_in(manifest, "wall_seconds"))
    run.trainable = as_int(get_in(manifest, "parameters", "trainable"))
    run.total_params = as_int(get_in(manifest, "parameters", "total"))
    memory = get_in(manifest, "peak_memory_bytes")
    if isinstance(memory, dict):
        # GPU memory is the scarce one when there was a GPU; otherwise the process's RSS.
        for kind in ("cuda_allocated", "rss"):
            if as_int(memory.get(kind)) is not None:
                run.peak_memory, run.peak_memory_kind = memory[kind], kind
                break
    if curves is not None:
        if run.steps is None and curves.train_loss:
            run.steps = int(curves.train_loss[-1][0])
        if run.final_train_loss is None and curves.train_loss:
            run.final_train_loss = curves.train_loss[-1][1]
        if run.val_loss is None and curves.val_loss:
            run.val_loss = min(value for _, value in curves.val_loss)

    if manifest is None:
        run.status = "incomplete"
        last = f" (last logged step {run.steps})" if run.steps is not None else ""
        notes.append(
            "no manifest.json: still training, or stopped before the end"
            f"{last}; a stopped run resumes with `tuneforge train ... --resume`"
        )
    elif run.weights is None:
        notes.append("no trained weights (adapter or model.safetensors) in the directory")
    if config is None and manifest is None and curves is None:
        run.status = "broken"
    if curves is None and manifest is not None:
        notes.append("no metrics.jsonl: no loss curves to show")
    run.finished_at = _mtime(path / "manifest.json", path / "metrics.jsonl", path / "config.yaml")

    eval_dir = path / "eval"
    eval_results = read_json(eval_dir / "metrics.json", notes)
    if eval_results is not None:
        run.eval = summarize_eval(eval_results, notes)
        if not isinstance(eval_results, dict):
            eval_results = None
    found = sorted(eval_dir.glob("*.png")) if eval_dir.is_dir() else []
    # The fine-tuned model's confusion matrix first: it is the one a reader looks for.
    found.sort(key=lambda p: (p.stem != "comparison", p.stem != "confusion_tuned", p.stem))
    plots = {p.stem: p for p in found if p.is_file()}
    return RunDetail(
        summary=run,
        config=config,
        config_text=config_text,
        manifest=manifest,
        curves=curves,
        eval_results=eval_results,
        eval_plots=plots,
        has_loss_png=(path / "loss.png").is_file(),
        has_report_html=(eval_dir / "report.html").is_file(),
    )


# ---------------------------------------------------------------------------------------------
# the directory
# ---------------------------------------------------------------------------------------------


@dataclass
class Scan:
    runs: list[RunSummary]
    compares: list[str]
    """Directories holding a `tuneforge compare` summary.json."""
    skipped: list[str]
    """Directories that are neither (prepare outputs, caches ...)."""


def is_compare_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() and not (path / "config.yaml").is_file()


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _RUN_MARKERS)


def scan(root: Path) -> Scan:
    """Every direct child of `root`, classified; runs are read (their summary only)."""
    runs: list[RunSummary] = []
    compares: list[str] = []
    skipped: list[str] = []
    try:
        children = sorted(root.iterdir())
    except OSError:
        return Scan([], [], [])
    for child in children:
        if child.name.startswith(".") or not child.is_dir():
            continue
        if is_compare_dir(child):
            compares.append(child.name)
        elif is_run_dir(child):
            runs.append(read_run(child).summary)
        else:
            skipped.append(child.name)
    return Scan(runs, compares, skipped)


SORT_KEYS = {
    "name": lambda r: r.name.lower(),
    "date": lambda r: r.finished_at,
    "model": lambda r: (r.model or "").lower(),
    "method": lambda r: r.method or "",
    "steps": lambda r: r.steps,
    "train_loss": lambda r: r.final_train_loss,
    "val_loss": lambda r: r.val_loss,
    "metric": lambda r: r.eval.tuned if r.eval else None,
    "wall": lambda r: r.wall_seconds,
    "memory": lambda r: r.peak_memory,
}


def sort_runs(runs: list[RunSummary], key: str, descending: bool) -> list[RunSummary]:
    """Runs ordered by `key` (see SORT_KEYS); runs without a value go last either way."""
    get = SORT_KEYS.get(key, SORT_KEYS["date"])
    present = [r for r in runs if get(r) is not None]
    missing = [r for r in runs if get(r) is None]
    return sorted(present, key=get, reverse=descending) + sorted(missing, key=lambda r: r.name)
