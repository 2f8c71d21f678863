"""The loss: label-only logits equal the full computation for every method, and gradient
accumulation is exactly a bigger batch.

Why exact equivalence holds (and is tested) rather than only the loss normalisation: batches are
drawn per micro-batch, but with `data.group_by_length=false` an epoch's order is one seeded
permutation cut into consecutive chunks, so the 2 micro-batches of 4 that make one accumulation
window are exactly the batch of 8 that batch_size=8 draws. The loss of each micro-batch is its
sum over answer tokens divided by the tokens of the whole window, so the accumulated gradient is
the gradient of the window's per-token mean: the same update. (With length grouping the
permutation is cut differently per batch size, so windows hold other examples: not comparable.)
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tuneforge.config import MethodConfig, ModelConfig
from tuneforge.train import checkpoint as ckpt
from tuneforge.train.data import collate, epoch_batches, shared_prefix_length, tokenize_rows
from tuneforge.train.loss import answer_loss, full_logits_loss, virtual_token_offset
from tuneforge.train.run import train
from tuneforge.train.tracking import read_metrics

KINDS = ["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning"]


def _trainable(run_dir, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = ckpt.checkpoint_dir(run_dir) / f"step-{step:08d}" / "trainable.safetensors"
    return load_file(str(path))


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_grad_accum_equals_one_big_batch(kind, make_cfg, tmp_path):
    common = (
        f"method.kind={kind}",
        "method.dropout=0",
        "data.group_by_length=false",
        "train.lr=1e-2" if kind == "lora" else "train.lr=1e-3",
        "train.max_steps=6",  # crosses an epoch boundary (4 steps of 8 per epoch)
        "train.save_every=6",
        "train.scheduler=cosine",
        "train.warmup_ratio=0.2",
    )
    accum, big = tmp_path / "accum", tmp_path / "big"
    train(make_cfg(*common, "train.batch_size=4", "train.grad_accum=2"), accum, log=lambda s: None)
    train(make_cfg(*common, "train.batch_size=8", "train.grad_accum=1"), big, log=lambda s: None)

    got, want = read_metrics(accum), read_metrics(big)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 7))
    for a, b in zip(got, want, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-5)
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-4)
    a, b = _trainable(accum, 6), _trainable(big, 6)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("packing", ["true", "false"])
def test_token_budget_split_gives_the_same_updates(make_cfg, tmp_path, packing):
    """Batches cut to a token budget train exactly as the uncut batches (only memory changes)."""
    common = (
        "method.dropout=0",
        "train.lr=1e-2",
        "train.max_steps=4",
        "train.save_every=4",
        f"data.packing={packing}",
    )
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    train(make_cfg(*common, "train.max_batch_tokens=40"), cut, log=lambda s: None)
    train(make_cfg(*common, "train.max_batch_tokens=null"), whole, log=lambda s: None)
    got, want = read_metrics(cut), read_metrics(whole)
    assert len(got) == len(want) == 4
    for a, b in zip(got, want, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-5)
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-4)
    a, b = _trainable(cut, 4), _trainable(whole, 4)
    for name in a:
        # Summation order differs; Adam divides by sqrt(v), so an element whose gradient is
        # ~0 turns float noise into a visible step (seen: 2e-4 on 1 of 2,048). A real
        # difference would move many elements by ~lr (1e-2) per step.
        torch.testing.assert_close(a[name], b[name], atol=1e-3, rtol=1e-3)


def test_logged_loss_is_the_per_token_mean_over_the_window(
    make_cfg, tiny_model_dir, task_dir, tmp_path
):
    """Step 4 logs sum(token losses) / sum(tokens) over its whole window (two micro-batches),
    recomputed here from the step-3 checkpoint, not the mean of the micro-batches' means."""
    from tuneforge.models.load import load_model
    from tuneforge.train.data import read_split

    cfg = make_cfg(
        "method.kind=full",
        "method.dropout=0",
        "data.group_by_length=false",
        "train.lr=3e-3",
        "train.batch_size=4",
        "train.grad_accum=2",
        "train.max_steps=4",
        "train.save_every=1",
        "train.keep_last=4",
    )
    run_dir = tmp_path / "run"
    train(cfg, run_dir, log=lambda s: None)
    logged = read_metrics(run_dir)[3]["train/loss"]

    model, tokenizer, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    ckpt.load_trainable(model, ckpt.checkpoint_dir(run_dir) / "step-00000003")
    split = tokenize_rows(read_split(task_dir / "train.jsonl"), tokenizer, 512)
    batches = epoch_batches(split.lengths, 4, cfg.train.seed, 0, group_by_length=False)
    sums, counts = [], []
    with torch.no_grad():
        for indices in batches[6:8]:  # step 4 = micro-batches 6 and 7 of epoch 0
            loss_sum, count = full_logits_loss(
                model, collate(split, indices, tokenizer.pad_token_id)
            )
            sums.append(loss_sum.item())
            counts.append(count.item())
    per_token = sum(sums) / sum(counts)
    mean_of_means = sum(s / c for s, c in zip(sums, counts, strict=True)) / len(sums)
    assert counts[0] != counts[1]  # answers of different lengths weigh the micro-batches
    assert abs(per_token - mean_of_means) > 1e-2
    assert logged == pytest.approx(per_token, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_answer_loss_equals_full_logits_loss(kind, tiny_model_dir, rows):
    """Label-only logits (and the shared prompt prefix, where used) change only the cost."""
    from tuneforge.models.adapters import attach_method
    from tuneforge.models.load import load_model

    quantization = "nf4" if kind == "qlora" else "none"
    if quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    model, tokenizer, _ = load_model(
        ModelConfig(name=str(tiny_model_dir)), quantization=quantization
    )
    torch.manual_seed(0)
    model = attach_method(model, MethodConfig(kind=kind, dropout=0.0, num_virtual_tokens=5))
    if kind in ("lora", "qlora", "dora"):  # B starts at 0: move it so the adapter matters
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1)
    model.eval()
    split = tokenize_rows(rows(12), tokenizer, 512)  # prompts of several lengths: padding
    batch = collate(split, list(range(len(split))), tokenizer.pad_token_id)
    offset = virtual_token_offset(model)
    assert offset == (5 if kind == "prompt_tuning" else 0)

    with torch.no_grad():
        reference, ref_count = full_logits_loss(model, batch)
        plain, plain_count = answer_loss(model, batch, offset)
        assert plain_count.item() == ref_count.item() > 0
        assert plain.item() == pytest.approx(reference.item(), rel=1e-5)
        if kind not in ("prompt_tuning", "prefix_tuning"):  # the loop shares prefixes for these
            prefix = shared_prefix_length(split)
            assert prefix >= 4
            shared, shared_count = answer_loss(model, batch, offset, prefix)
            assert shared_count.item() == ref_count.item()
            assert shared.item() == pytest.approx(reference.item(), rel=1e-5)
