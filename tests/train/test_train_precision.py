"""train.precision=bf16: frozen linear weights in bfloat16, autocast, float32 adapters."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.config import ConfigError, TrainConfig, resolve
from tuneforge.models.precision import freeze_linear_weights_in_bf16
from tuneforge.train.run import load_for_training, make_accelerator, train
from tuneforge.train.tracking import read_metrics


def test_only_frozen_linear_weights_become_bf16(make_cfg):
    model, _, _ = load_for_training(make_cfg("method.kind=lora"), "cpu")
    embedding = model.get_input_embeddings().weight
    converted = freeze_linear_weights_in_bf16(model)
    assert converted > 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.dtype == torch.float32, name  # the adapter trains in float32
        elif "norm" in name or param is embedding:
            assert param.dtype == torch.float32, name
    frozen_linears = [
        m.weight
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
    ]
    head = model.get_output_embeddings().weight
    assert head is embedding  # the tiny model ties them, and stays tied: one float32 copy
    assert [w for w in frozen_linears if w is not head]
    assert all(w.dtype == torch.bfloat16 for w in frozen_linears if w is not head)
    assert freeze_linear_weights_in_bf16(model) == 0  # nothing float32 and frozen is left


def test_bf16_run_trains_and_saves_a_float32_adapter(make_cfg, tmp_path):
    common = ("method.kind=lora", "train.lr=1e-2", "train.max_steps=12", "train.batch_size=32")
    cfg = make_cfg(*common, "train.scheduler=constant", "method.dropout=0.1")
    cfg_bf16 = make_cfg(*common, "train.scheduler=constant", "method.dropout=0.1",
                        "train.precision=bf16")  # fmt: skip
    # accelerate's process-wide mixed precision stays off on CPU: the loop autocasts itself.
    assert make_accelerator(cfg_bf16).mixed_precision == "no"

    train(cfg, tmp_path / "fp32", log=lambda s: None)
    train(cfg_bf16, tmp_path / "bf16", log=lambda s: None)
    fp32 = [r["train/loss"] for r in read_metrics(tmp_path / "fp32")]
    bf16 = [r["train/loss"] for r in read_metrics(tmp_path / "bf16")]
    assert all(math.isfinite(x) for x in bf16)
    assert bf16[-1] < bf16[0] - 0.5  # it learns
    # bfloat16 products round differently (so the setting took effect), but the curve follows
    # the float32 one.
    assert bf16 != fp32
    assert bf16[-1] == pytest.approx(fp32[-1], abs=0.25)

    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "bf16" / "adapter_model.safetensors")
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())
    assert resolve(TrainConfig, tmp_path / "bf16" / "config.yaml").train.precision == "bf16"


@pytest.mark.parametrize("kind", ["full", "qlora"])
def test_bf16_precision_is_refused_without_frozen_float_weights(make_cfg, kind):
    with pytest.raises(ConfigError, match=r"train\.precision=bf16.*method\.kind=" + kind):
        make_cfg(f"method.kind={kind}", "train.precision=bf16")


def test_full_fine_tuning_keeps_float32_master_weights_on_cuda(make_cfg):
    """dtype=auto is bfloat16 on CUDA; weights AdamW updates must stay float32 there."""
    from tuneforge.train.run import training_model_config

    full = make_cfg("method.kind=full")
    assert training_model_config(full, "cuda:0").dtype == "float32"
    assert training_model_config(full, "cpu") == full.model
    # Frozen weights may stay bfloat16 (adapters keep their own in float32) ...
    assert training_model_config(make_cfg("method.kind=lora"), "cuda").dtype == "auto"
    # ... and a dtype the user chose is theirs.
    pinned = make_cfg("method.kind=full", "model.dtype=bfloat16")
    assert training_model_config(pinned, "cuda").dtype == "bfloat16"
