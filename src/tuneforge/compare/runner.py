"""Run a comparison: each variant trained (in its own process), then evaluated; resumable.

Layout of the output directory OUT:

    OUT/configs/NAME.yaml   the variant's resolved config (what its training read)
    OUT/runs/NAME/          its `tuneforge train` run; OUT/runs/NAME/eval its `tuneforge eval`
    OUT/logs/NAME.log       the training process's output
    OUT/summary.json, summary.md, quality_vs_time.png, quality_vs_memory.png

Each variant trains in a child `tuneforge train` process because peak memory is per process
(`ru_maxrss` never goes down): in one process every variant would report the largest peak so
far. Evaluation runs in this process (its memory is not reported).

State of a variant, read from its files, decides what runs again:
    manifest.json + eval/metrics.json (same test split)  -> nothing (finished)
    manifest.json                                        -> eval only
    a checkpoint                                         -> `train --resume`, then eval
    anything else                                        -> train from scratch (replacing it)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuneforge.compare.grid import GridAxis, Variant
from tuneforge.config import TrainConfig, resolve, to_yaml
from tuneforge.errors import TuneforgeError
from tuneforge.fsutil import atomic_write_text
from tuneforge.train import checkpoint as ckpt

State = Literal["evaluated", "trained", "partial", "fresh"]
TrainMode = Literal["fresh", "resume", "force"]
# (config file, run dir, mode, log file, log) -> the training process's exit code
Trainer = Callable[[Path, Path, TrainMode, Path, Callable[[str], None]], int]
Evaluator = Callable[..., dict[str, Any]]


@dataclass
class EvalOptions:
    """How every variant is evaluated: the same test split, limit and baselines for all."""

    data: Path | None = None
    """The test split; `plan_comparison` sets it (default: data.dir/test.jsonl)."""
    baselines: list[str] = field(default_factory=lambda: ["zero", "fewshot"])
    shots: int = 8
    limit: int | None = None
    device: str = "cpu"
    batch_size: int = 32  # tuneforge eval's default (measured faster than 16 on CPU)
    scoring: str = "auto"
    precision: str = "auto"


@dataclass
class Outcome:
    """What happened to one variant in this invocation."""

    name: str
    status: Literal["done", "failed", "skipped"]
    reason: str | None = None
    actions: list[str] = field(default_factory=list)
    """What this invocation ran for it: "train", "resume", "eval" (empty: already finished)."""


@dataclass
class Paths:
    out: Path

    def config(self, name: str) -> Path:
        return self.out / "configs" / f"{name}.yaml"

    def run(self, name: str) -> Path:
        return self.out / "runs" / name

    def eval(self, name: str) -> Path:
        return self.run(name) / "eval"

    def log(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"


def train_in_subprocess(
    config: Path, run_dir: Path, mode: TrainMode, log_file: Path, log: Callable[[str], None]
) -> int:
    """`python -m tuneforge train CONFIG -o RUN [--resume|--force]`, output teed to `log_file`."""
    cmd = [sys.executable, "-m", "tuneforge", "train", str(config), "-o", str(run_dir)]
    if mode != "fresh":
        cmd.append(f"--{mode}")
    env = {"COLUMNS": "120", **os.environ, "PYTHONUNBUFFERED": "1"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        previous = _raise_on_sigterm()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                if line.strip():
                    log(f"  {line.rstrip()}")
            return proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM: stop the child too; its checkpoints stay
            proc.terminate()
            proc.wait()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    """SIGTERM arrived while a training process ran."""


def _raise_on_sigterm() -> Any:
    """Make SIGTERM an exception while a child trains, so the child is stopped with us instead
    of training on as an orphan (the default SIGTERM ends Python without unwinding)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated (SIGTERM)")

    return signal.signal(signal.SIGTERM, handler)


def variant_state(run_dir: Path, eval_dir: Path, opts: EvalOptions, expected_n: int) -> State:
    if (run_dir / "manifest.json").is_file():
        metrics = read_json(eval_dir / "metrics.json")
        if metrics and metrics.get("data") == str(opts.data) and metrics.get("n") == expected_n:
            return "evaluated"
        return "trained"
    if ckpt.list_checkpoints(run_dir):
        return "partial"
    return "fresh"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    dump = cfg.model_dump(mode="json")
    dump.pop("tracking", None)  # logging backends do not change what is trained
    return dump


def check_existing(variants: list[Variant], paths: Paths) -> None:
    """A run already in OUT must have been trained with the variant's config, or its results
    would be reported under settings it never had."""
    for variant in variants:
        saved_file = paths.run(variant.name) / "config.yaml"
        if not saved_file.is_file():
            continue
        saved = resolve(TrainConfig, saved_file)
        if _comparable(saved) != _comparable(variant.config):
            raise TuneforgeError(
                f"{paths.run(variant.name)}: holds a run with a different config than variant "
                f"{variant.name} now resolves to (the config file or overrides changed); use "
                "another -o, or --force to start the comparison again"
            )


def count_test_rows(path: Path, limit: int | None) -> int:
    if not path.is_file():
        raise TuneforgeError(f"test split {path}: no such file; pass --data TEST.jsonl")
    with open(path, encoding="utf-8") as fh:
        n = sum(1 for line in fh if line.strip())
    if n == 0:
        raise TuneforgeError(f"test split {path}: no examples in it")
    return min(n, limit) if limit is not None else n


def base_key(cfg: TrainConfig) -> str:
    """Variants with the same base model share one prompt-only baseline."""
    return f"{cfg.model.name}|{cfg.model.chat_template}|{cfg.model.dtype}"


def holds_baselines(metrics: dict[str, Any] | None, baselines: list[str]) -> bool:
    if not metrics:
        return False
    names = set(metrics.get("variants") or {})
    wanted = {f"base_{b}" if b != "classic" else "classic" for b in baselines}
    return wanted <= names


@dataclass
class Comparison:
    """Everything `run_comparison` needs; built and checked by `plan_comparison`."""

    config: Path
    overrides: list[str]
    axes: list[GridAxis]
    variants: list[Variant]
    paths: Paths
    eval_opts: EvalOptions
    expected_n: int
    budget_seconds: float | None = None
    price_per_hour: float | None = None


def run_comparison(
    comp: Comparison,
    *,
    trainer: Trainer = train_in_subprocess,
    evaluator: Evaluator | None = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Train and evaluate every variant not finished yet; write and return the summary."""
    from tuneforge.compare.summary import write_summary

    if evaluator is None:
        from tuneforge.eval.run import evaluate as evaluator
    paths, opts = comp.paths, comp.eval_opts
    started = clock()
    outcomes: dict[str, Outcome] = {}
    total = len(comp.variants)
    for number, variant in enumerate(comp.variants, start=1):
        name = variant.name
        run_dir, eval_dir = paths.run(name), paths.eval(name)
        state = variant_state(run_dir, eval_dir, opts, comp.expected_n)
        if state == "evaluated":
            log(f"[{number}/{total}] {name}: already trained and evaluated; not rerun")
            outcomes[name] = Outcome(name, "done")
            continue
        spent = clock() - started
        if comp.budget_seconds is not None and spent >= comp.budget_seconds:
            reason = (
                f"budget: {spent / 60:.1f} of {comp.budget_seconds / 60:g} min spent before it "
                "could start"
            )
            log(f"[{number}/{total}] {name}: skipped ({reason})")
            outcomes[name] = Outcome(name, "skipped", reason)
            write_summary(comp, outcomes)
            continue
        outcome = Outcome(name, "done")
        outcomes[name] = outcome
        try:
            if state != "trained":
                _train(variant, state, paths, trainer, outcome, log, f"[{number}/{total}]")
            _evaluate(comp, variant, evaluator, outcome, log, f"[{number}/{total}]")
        except TuneforgeError as exc:
            outcome.status, outcome.reason = "failed", str(exc)
            log(f"[{number}/{total}] {name}: failed: {exc}")
        write_summary(comp, outcomes)
    return write_summary(comp, outcomes)


def _train(
    variant: Variant,
    state: State,
    paths: Paths,
    trainer: Trainer,
    outcome: Outcome,
    log: Callable[[str], None],
    tag: str,
) -> None:
    name = variant.name
    run_dir = paths.run(name)
    config_file = paths.config(name)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_file, to_yaml(variant.config))
    if state == "partial":
        mode: TrainMode = "resume"
    elif run_dir.exists() and any(run_dir.iterdir()):
        mode = "force"  # stopped before its first checkpoint: nothing to keep
    else:
        mode = "fresh"
    log(f"{tag} {name}: {'resuming' if mode == 'resume' else 'training'} -> {run_dir}")
    outcome.actions.append("resume" if mode == "resume" else "train")
    code = trainer(config_file, run_dir, mode, paths.log(name), log)
    if code != 0 or not (run_dir / "manifest.json").is_file():
        raise TuneforgeError(
            f"training exited with code {code}; see {paths.log(name)} "
            f"(rerun the compare to resume it from its last checkpoint)"
        )


def _evaluate(
    comp: Comparison,
    variant: Variant,
    evaluator: Evaluator,
    outcome: Outcome,
    log: Callable[[str], None],
    tag: str,
) -> None:
    opts, paths = comp.eval_opts, comp.paths
    # The prompt-only baselines depend on the base model and the test split, not the
    # fine-tune: score them once, in the first evaluation of each base model.
    key = base_key(variant.config)
    others = [v for v in comp.variants if v.name != variant.name and base_key(v.config) == key]
    done_elsewhere = any(
        holds_baselines(read_json(paths.eval(v.name) / "metrics.json"), opts.baselines)
        for v in others
    )
    baselines = [] if done_elsewhere else opts.baselines
    eval_dir = paths.eval(variant.name)
    log(
        f"{tag} {variant.name}: evaluating on {opts.data}"
        + (f" (with baselines {','.join(baselines)})" if baselines else "")
    )
    outcome.actions.append("eval")
    evaluator(
        paths.run(variant.name),
        opts.data,
        eval_dir,
        baselines,
        opts.shots,
        None,
        opts.scoring,
        force=eval_dir.exists(),
        device=opts.device,
        batch_size=opts.batch_size,
        precision=opts.precision,
        forgetting=False,
        variation=False,
        limit=opts.limit,
        log=lambda line: log(f"  {line}"),
    )
