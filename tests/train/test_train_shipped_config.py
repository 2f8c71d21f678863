"""The quick smoke run of a shipped recipe works as documented (on the tiny model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneforge.train.tracking import read_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_smollm2_lora_recipe_smoke_run(tiny_model_dir, task_dir, cli, tmp_path):
    run_dir = tmp_path / "runs" / "smollm2-lora"
    extra = [] if importlib.util.find_spec("tensorboard") else ["tracking.tensorboard=false"]
    result = cli(
        "train", CONFIGS / "smollm2-135m" / "lora.yaml",
        f"model.name={tiny_model_dir}", f"data.dir={task_dir}", "train.max_steps=2", *extra,
        "-o", run_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and "error" not in result.output
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    for name in ("adapter_model.safetensors", "adapter_config.json", "manifest.json", "loss.png"):
        assert (run_dir / name).is_file(), name
    saved = (run_dir / "config.yaml").read_text()
    assert "kind: lora" in saved and "batch_size: 16" in saved and "max_steps: 2" in saved
