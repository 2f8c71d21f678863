"""Where metrics go: metrics.jsonl always; TensorBoard, MLflow and W&B when configured.

Optional backends are imported only when enabled; a missing package is a clear error before
training starts, not a crash at the first log call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config import TrackingConfig, TrainConfig, flat_keys
from tuneforge.errors import TuneforgeError

METRICS_FILE = "metrics.jsonl"


def check_backends(cfg: TrackingConfig) -> None:
    """Fail early (exit 2) if a configured backend is not installed."""
    import importlib.util

    for enabled, module, extra in (
        (cfg.tensorboard, "tensorboard", "track"),
        (cfg.mlflow, "mlflow", "track"),
        (cfg.wandb, "wandb", "track"),
    ):
        if enabled and importlib.util.find_spec(module) is None:
            raise TuneforgeError(
                f"tracking.{module} is on but {module} is not installed: "
                f"pip install 'tuneforge[{extra}]' (or {module}), or set tracking.{module}=false"
            )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Tracker:
    """Writes each record to every enabled backend. Only the main process makes one."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, resume_step: int | None = None) -> None:
        self.run_dir = run_dir
        path = run_dir / METRICS_FILE
        if resume_step is not None:
            # Drop what was logged after the checkpoint we resume from: it will be redone.
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb = self._mlflow = self._wandb = None
        tracking = cfg.tracking
        if tracking.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)
        if tracking.mlflow:
            import mlflow

            mlflow.set_tracking_uri(tracking.mlflow_uri or (run_dir / "mlruns").resolve().as_uri())
            mlflow.set_experiment("tuneforge")
            self._mlflow = mlflow.start_run(run_name=run_dir.name)
            mlflow.log_params(flat_keys(cfg.model_dump(mode="json")))
        if tracking.wandb:
            import wandb

            self._wandb = wandb.init(
                project=tracking.wandb_project or "tuneforge",
                name=run_dir.name,
                dir=str(run_dir),
                config=cfg.model_dump(mode="json"),
                resume="allow",
            )

    def log(self, record: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        step = int(record.get("step", 0))
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key.replace(".", "/"), value, step)
        if self._mlflow is not None:
            import mlflow

            mlflow.log_metrics(
                {k.replace("/", "_"): float(v) for k, v in scalars.items()}, step=step
            )
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None:
            import mlflow

            mlflow.end_run()
        if self._wandb is not None:
            self._wandb.finish()


def plot_losses(run_dir: Path) -> Path | None:
    """loss.png: train loss and learning rate against steps, with val loss where measured."""
    records = read_metrics(run_dir)
    train = [r for r in records if "train/loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [r for r in records if "val/loss" in r]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[3, 1])
    ax_loss.plot([r["step"] for r in train], [r["train/loss"] for r in train], label="train", lw=1)
    if val:
        ax_loss.plot([r["step"] for r in val], [r["val/loss"] for r in val], "o-", label="val")
    ax_loss.set_ylabel("loss (answer tokens)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot([r["step"] for r in train], [r["train/lr"] for r in train], color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / "loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
