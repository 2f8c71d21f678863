"""The CUDA paths of `train` (bf16 autocast, 8-bit and paged AdamW, NF4 on the GPU).

Skipped without a CUDA GPU (CI has none); run on a lent GPU with
`python -m pytest tests/train/test_train_cuda.py`. The CPU tests cover the same code with
float32; these check what only a GPU reaches.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from test_train_methods import METHODS, STEPS

from tuneforge.train.run import train
from tuneforge.train.tracking import read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("kind", list(METHODS))
def test_method_trains_on_cuda(kind, method_cfg, tmp_path):
    if kind == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    lr, cpu_drop = METHODS[kind]
    min_drop = cpu_drop / 2  # bfloat16 arithmetic: half the CPU test's required fall
    cfg = method_cfg(kind, lr, STEPS)
    run_dir = tmp_path / "run"
    train(cfg, run_dir, log=lambda s: None)
    losses = [r["train/loss"] for r in read_metrics(run_dir)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - min_drop, f"{kind}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["hardware"]["device"].startswith("cuda") and manifest["hardware"]["gpu"]
    assert manifest["peak_memory_bytes"]["cuda_allocated"] > 0
    # Weights AdamW updates are float32 masters; frozen ones bfloat16 (or 4-bit for qlora).
    assert manifest["model"]["dtype"] == ("float32" if kind == "full" else "bfloat16")


def test_auto_optimizer_is_8bit_on_cuda(make_cfg):
    """train.optimizer=auto: AdamW8bit, paged for QLoRA, when bitsandbytes is installed."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from tuneforge.train.loop import build_optimizer
    from tuneforge.train.run import load_for_training

    device = torch.device("cuda")
    for kind, expected in (("lora", bnb.optim.AdamW8bit), ("qlora", bnb.optim.PagedAdamW8bit)):
        cfg = make_cfg(f"method.kind={kind}")
        model, _, _ = load_for_training(cfg, "cuda")
        optimizer = build_optimizer(model, cfg, device, 1e-3)
        assert isinstance(optimizer, expected), (kind, type(optimizer))


def test_qlora_base_is_4bit_on_the_gpu(make_cfg):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from tuneforge.train.run import load_for_training

    model, _, _ = load_for_training(make_cfg("method.kind=qlora"), "cuda")
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and all(m.weight.device.type == "cuda" for m in linear4)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)


def test_packed_chunks_match_the_mask_on_cuda(make_cfg, tmp_path, monkeypatch):
    """Chunked attention of packed rows: the same curve as one masked call, on the GPU."""
    monkeypatch.setattr("tuneforge.models.packed_attention.CHUNK_TOKENS", 16)  # rows of ~100
    monkeypatch.setattr("tuneforge.models.packed_attention.MIN_ROW_TOKENS", 0)
    common = ("method.kind=lora", "method.dropout=0", "train.max_steps=4", "train.eval_every=2")
    curves = {}
    for mode in ("chunks", "mask"):
        run_dir = tmp_path / mode
        train(make_cfg(*common, f"data.packed_attention={mode}"), run_dir, log=lambda s: None)
        rows = read_metrics(run_dir)
        curves[mode] = [r[k] for r in rows for k in ("train/loss", "val/loss") if k in r]
    assert len(curves["chunks"]) == 6
    # bfloat16 products in a different order: close, not equal
    assert curves["chunks"] == pytest.approx(curves["mask"], rel=2e-2)
