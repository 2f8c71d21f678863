"""Every method trains the tiny model on CPU with falling loss and leaves a complete run dir."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from tuneforge.config import ModelConfig, TrainConfig, resolve
from tuneforge.errors import TuneforgeError
from tuneforge.fsutil import sha256_file
from tuneforge.train.run import train
from tuneforge.train.tracking import read_metrics

# kind -> (learning rate, how far the loss must fall in STEPS full-batch steps).
# Each logged loss is the loss of the whole train split under deterministic weights (dropout 0,
# one batch), so any fall is learning, not noise. The tiny model is random with 0.02-scale
# weights, so its logits stay near +-1.3 unless the embeddings themselves train: full
# fine-tuning gets close to 0, LoRA-family adapters plateau near 4.8, and IA3 / soft prompts,
# which only rescale activations or add (RMS-normalised) context, move least. Measured drops
# from ~6.0: full 5.4, lora/dora/qlora ~1.2, ia3 0.41, prefix 0.29, prompt 0.12.
METHODS = {
    "full": (3e-3, 3.0),
    "lora": (1e-2, 0.7),
    "qlora": (1e-2, 0.7),
    "dora": (1e-2, 0.7),
    "ia3": (3e-1, 0.25),
    "prompt_tuning": (3e-1, 0.08),
    "prefix_tuning": (1e-1, 0.2),
}
STEPS = 30
PEFT_FILES = ("adapter_model.safetensors", "adapter_config.json")
FULL_FILES = ("model.safetensors", "config.json")
COMMON_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "config.yaml",
    "manifest.json",
    "metrics.jsonl",
    "loss.png",
)


def _reloaded_val_loss(run_dir, cfg: TrainConfig, task_dir) -> float:
    """Mean answer-token loss on val.jsonl of the model as saved in run_dir, loaded afresh."""
    from tuneforge.models.load import load_model
    from tuneforge.models.tokenizer import load_saved_tokenizer
    from tuneforge.train.data import collate, read_split, tokenize_rows
    from tuneforge.train.loss import answer_loss, virtual_token_offset

    if cfg.method.kind == "full":
        model, _, _ = load_model(ModelConfig(name=str(run_dir)))
    else:
        from peft import PeftModel

        base, _, _ = load_model(cfg.model, quantization=cfg.method.quantization)
        model = PeftModel.from_pretrained(base, run_dir)
    model.eval()
    tokenizer = load_saved_tokenizer(run_dir)
    split = tokenize_rows(read_split(task_dir / "val.jsonl"), tokenizer, cfg.model.max_seq_len)
    batch = collate(split, list(range(len(split))), tokenizer.pad_token_id)
    with torch.no_grad():
        loss_sum, count = answer_loss(model, batch, virtual_token_offset(model))
    return (loss_sum / count).item()


@pytest.mark.parametrize("kind", list(METHODS))
def test_method_trains_with_falling_loss_and_writes_run_dir(kind, method_cfg, task_dir, tmp_path):
    if kind == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    lr, min_drop = METHODS[kind]
    # Full-batch steps: a fall is learning, not a luckier batch.
    cfg = method_cfg(kind, lr, STEPS)
    run_dir = tmp_path / "run"
    result = train(cfg, run_dir, log=lambda s: None)

    records = read_metrics(run_dir)
    losses = [r["train/loss"] for r in records]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - min_drop, f"{kind}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert result.steps == STEPS and result.final_train_loss == pytest.approx(losses[-1])
    assert result.best_val_loss == min(r["val/loss"] for r in records if "val/loss" in r)

    weights = FULL_FILES if kind == "full" else PEFT_FILES
    for name in (*weights, *COMMON_FILES):
        assert (run_dir / name).is_file(), f"{name} missing from the run dir"
    assert not (run_dir / "tensorboard").exists()
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<|im_start|>" in (run_dir / "chat_template.jinja").read_text()

    # config.yaml is the resolved config and reloads to the same one.
    assert resolve(TrainConfig, run_dir / "config.yaml") == cfg

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["method"] == kind and manifest["seed"] == cfg.train.seed
    model = manifest["model"]
    assert model["source_kind"] == "directory" and model["path"] == str(cfg.model.name)
    assert "sha256" in model
    assert model["quantization"] == ("nf4" if kind == "qlora" else "none")
    dataset = manifest["dataset"]
    assert dataset["train_sha256"] == sha256_file(task_dir / "train.jsonl")
    assert dataset["train_examples"] == 32 and dataset["val_examples"] == 8
    for package in ("torch", "transformers", "peft", "accelerate", "safetensors"):
        assert manifest["packages"][package], package
    assert manifest["hardware"]["device"] == "cpu" and manifest["hardware"]["cpu_count"]
    assert manifest["wall_seconds"] > 0 and manifest["peak_memory_bytes"]["rss"] > 0
    assert manifest["result"]["steps"] == STEPS
    assert manifest["parameters"]["trainable"] > 0

    # What was saved is what was trained: reloaded from the run dir alone (PeftModel /
    # from_pretrained), it scores the best validation loss, whose weights the run ends with.
    assert _reloaded_val_loss(run_dir, cfg, task_dir) == pytest.approx(
        result.best_val_loss, rel=1e-4, abs=1e-4
    )


def test_tensorboard_events_written(make_cfg, tmp_path):
    cfg = make_cfg("train.max_steps=3", "tracking.tensorboard=true", "train.lr=1e-2")
    run_dir = tmp_path / "run"
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(TuneforgeError, match=r"tracking\.tensorboard"):
            train(cfg, run_dir, log=lambda s: None)
        assert not run_dir.exists()
        return
    train(cfg, run_dir, log=lambda s: None)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/loss"} <= set(scalars)
    logged = [e.value for e in accumulator.Scalars("train/loss")]
    expected = [r["train/loss"] for r in read_metrics(run_dir)]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_missing_tensorboard_fails_before_the_run_dir(make_cfg, tmp_path, monkeypatch):
    """What a user without tensorboard sees (forced here even where it is installed)."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a),
    )
    run_dir = tmp_path / "run"
    with pytest.raises(TuneforgeError, match=r"tracking\.tensorboard=false") as err:
        train(make_cfg("tracking.tensorboard=true"), run_dir, log=lambda s: None)
    assert "pip install" in str(err.value) and err.value.exit_code == 2
    assert not run_dir.exists()
