"""Early stopping (best weights restored) and the divergence guard (NaN/inf, exploding grads)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tuneforge.train import checkpoint as ckpt
from tuneforge.train import loop
from tuneforge.train.loop import TrainingDivergedError
from tuneforge.train.run import train
from tuneforge.train.tracking import read_metrics


def _peft_weights(cfg, run_dir) -> dict[str, torch.Tensor]:
    """Trainable weights of the run's saved adapter, loaded the way a user would."""
    from peft import PeftModel

    from tuneforge.models.load import load_model

    base, _, _ = load_model(cfg.model)
    model = PeftModel.from_pretrained(base, run_dir)
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def _trainable(checkpoint) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "trainable.safetensors"))


@pytest.fixture
def early_cfg(make_cfg):
    # LoRA at a learning rate this high overshoots: validation loss bounces up within a few
    # steps of its best, which is what early stopping is for.
    return make_cfg(
        "method.kind=lora",
        "method.dropout=0",
        "train.lr=3e-2",
        "train.batch_size=8",
        "train.max_steps=30",
        "train.eval_every=1",
        "data.group_by_length=true",  # the batch order this scenario was built on
        "train.early_stopping_patience=2",
    )


def test_early_stopping_stops_and_restores_best(early_cfg, tmp_path):
    run_dir = tmp_path / "run"
    result = train(early_cfg, run_dir, log=lambda s: None)
    records = read_metrics(run_dir)
    val = {r["step"]: r["val/loss"] for r in records}
    assert set(val) == set(range(1, result.steps + 1))  # evaluated every step

    assert result.stopped_early and result.steps < 30
    best = min(val, key=val.get)
    assert (result.best_step, result.best_val_loss) == (best, val[best])
    # Stopped at the second evaluation in a row that did not improve on the best.
    assert result.steps == best + 2
    assert all(val[s] >= val[best] for s in (best + 1, best + 2))

    # The saved adapter holds the best step's weights, not the last step's.
    best_weights = _trainable(ckpt.checkpoint_dir(run_dir) / f"step-{best:08d}")
    last_weights = _trainable(ckpt.checkpoint_dir(run_dir) / f"step-{result.steps:08d}")
    saved = _peft_weights(early_cfg, run_dir)
    assert saved.keys() == best_weights.keys()
    for name, tensor in best_weights.items():
        torch.testing.assert_close(saved[name], tensor, atol=0, rtol=0, msg=name)
    assert any(not torch.equal(saved[n], last_weights[n]) for n in saved)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["result"]["stopped_early"] is True
    assert manifest["result"]["best_step"] == best


def test_resuming_an_early_stopped_run_does_not_train_on(early_cfg, tmp_path):
    """Killed after the early-stop checkpoint, before the end: resuming must stop there too."""
    run_dir = tmp_path / "run"
    first = train(early_cfg, run_dir, log=lambda s: None)
    assert first.stopped_early
    metrics = (run_dir / "metrics.jsonl").read_text()
    adapter = (run_dir / "adapter_model.safetensors").read_bytes()

    again = train(early_cfg, run_dir, resume=True, log=lambda s: None)
    assert again.steps == first.steps and again.stopped_early
    assert again.best_step == first.best_step
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    assert (run_dir / "adapter_model.safetensors").read_bytes() == adapter


def test_nan_loss_stops_with_step_and_fix_and_keeps_last_good_checkpoint(
    make_cfg, tmp_path, monkeypatch
):
    real_answer_loss = loop.answer_loss
    steps_seen = {"n": 0}

    def answer_loss(model, *args, **kwargs):
        loss_sum, count = real_answer_loss(model, *args, **kwargs)
        if model.training:
            steps_seen["n"] += 1
            if steps_seen["n"] == 3:  # the third optimizer step (grad_accum=1)
                loss_sum = loss_sum * float("nan")
        return loss_sum, count

    monkeypatch.setattr(loop, "answer_loss", answer_loss)
    cfg = make_cfg("train.max_steps=10", "train.save_every=1", "train.lr=1e-2")
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg, run_dir, log=lambda s: None)
    message = str(err.value)
    assert "step 3" in message and "loss is nan" in message
    assert "train.lr" in message and "train.max_grad_norm" in message  # a likely fix
    kept = ckpt.list_checkpoints(run_dir)
    assert kept[-1].name == "step-00000002" and str(kept[-1]) in message
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]  # nothing logged for step 3
    assert err.value.exit_code == 3


def test_exploding_full_finetune_exits_3_through_cli(base_overrides, cli, config_file, tmp_path):
    # lr=1e3 with no warmup: step 1 moves every weight by ~1e3 and step 2's gradient norm is
    # ~1e11, far over train.grad_norm_limit. (lr=1e6 is no good here: it saturates the tiny
    # model into zero gradients and a constant loss of ln(vocab), which no guard can tell from
    # a plateau; lr=10 sends the loss to ~5000 with clipped, finite gradient norms ~200.)
    run_dir = tmp_path / "run"
    result = cli(
        "train", config_file(), *base_overrides, "method.kind=full", "train.lr=1e3",
        "train.max_steps=8", "train.save_every=1", "-o", run_dir,
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    output = result.output.replace("\n", "")
    assert output.count("error:") == 1 and "Traceback" not in output
    assert "training diverged at step" in output and "lower train.lr" in output
    step = int(output.split("training diverged at step ")[1].split(":")[0])
    assert step >= 2
    kept = ckpt.list_checkpoints(run_dir)
    assert kept and kept[-1].name == f"step-{step - 1:08d}"
    losses = [r["train/loss"] for r in read_metrics(run_dir)]
    assert len(losses) == step - 1 and all(math.isfinite(x) for x in losses)
    assert (run_dir / "config.yaml").is_file()  # the run dir stays, so it can be resumed
