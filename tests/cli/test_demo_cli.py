"""`tuneforge demo` end to end on a tiny model: every stage runs and leaves its artifacts.

The real demo (SmolLM2, a few minutes) is what `make demo` runs; here the stages are wired on a
tiny in-process model with two training steps, so the test checks the pipeline, not quality.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli.demo import demo_recipe
from tuneforge.cli.main import app
from tuneforge.config import TrainConfig, resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_cache")


def test_demo_recipe_loads():
    cfg = resolve(TrainConfig, demo_recipe())
    assert cfg.method.kind == "lora"
    assert cfg.model.name == "smollm2-135m"


def test_demo_runs_every_stage_on_a_tiny_model(tmp_path, tiny_model_dir):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "train.max_steps=2",
            "train.batch_size=4",
        ],
    )
    assert result.exit_code == 0, result.output
    for stage in ("1 · prepare", "2 · before training", "3 · train", "4 · evaluate", "5 · export"):
        assert stage in result.output
    assert "6 · serve" in result.output
    assert "intents answered right through the API" in result.output
    assert "did fine-tuning help?" in result.output
    assert (out / "data" / "manifest.json").is_file()
    assert (out / "run" / "adapter_model.safetensors").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"tuned", "base_zero", "base_fewshot", "classic"}
    assert (out / "export" / "MODEL_CARD.md").is_file()


def test_demo_rejects_a_bad_override_before_doing_anything(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "train.nope=1"])
    assert result.exit_code == 2
    assert "train.nope" in result.output
    assert not out.exists()


def test_demo_never_writes_into_a_folder_that_is_not_a_demo(tmp_path):
    out = tmp_path / "project"
    (out / "data").mkdir(parents=True)
    (out / "data" / "mine.csv").write_text("text,label\n")
    (out / "notes.md").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "not a demo's (notes.md)" in " ".join(result.output.split())
    assert (out / "data" / "mine.csv").is_file()
