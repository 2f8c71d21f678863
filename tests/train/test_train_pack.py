"""Packing a micro-batch into one row changes nothing but the cost."""

import pytest
import torch

from tuneforge.config import MethodConfig, ModelConfig, TrainConfig
from tuneforge.data.format import IGNORE_INDEX
from tuneforge.models.adapters import attach_method
from tuneforge.models.load import load_model
from tuneforge.models.packed_attention import PACKED_ATTENTION, register_packed_attention
from tuneforge.models.tiny import build_tiny_causal_lm
from tuneforge.train.data import (
    Batching,
    TokenizedSplit,
    collate,
    collate_packed,
    shared_prefix_length,
    token_budget_chunks,
    tokenize_rows,
)
from tuneforge.train.loop import batching_for
from tuneforge.train.loss import answer_loss

SYSTEM = {"role": "system", "content": "Classify the message. Answer with the label only."}


def rows(n=6, system=True):
    return [
        {
            "messages": ([SYSTEM] if system else [])
            + [
                {"role": "user", "content": "hello there " * (k + 1)},
                {"role": "assistant", "content": "fine " * (k % 3 + 1)},
            ]
        }
        for k in range(n)
    ]


def test_collate_packed_lays_out_prefix_once_then_each_example():
    split = TokenizedSplit(
        input_ids=[[1, 2, 3, 4, 5], [1, 2, 3, 7, 8, 9]],
        labels=[[IGNORE_INDEX] * 4 + [5], [IGNORE_INDEX] * 4 + [8, 9]],
    )
    batch = collate_packed(split, [0, 1], prefix_len=2)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 3, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3, 4, 5]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * 4 + [5] + [IGNORE_INDEX] * 2 + [8, 9]]
    mask = batch["attention_mask"][0, 0]
    assert mask.shape == (9, 9)
    # the second example's tokens see the prefix and themselves, never the first example
    assert mask[6].tolist() == [True, True, False, False, False, True, True, False, False]
    # the first example never sees later tokens (causal)
    assert mask[3].tolist() == [True, True, True, True] + [False] * 5


def test_each_example_first_own_token_gets_no_label():
    # even when the data would label it, nothing predicts it (as in a padded row)
    split = TokenizedSplit(input_ids=[[5, 6], [7, 8]], labels=[[5, 6], [7, 8]])
    batch = collate_packed(split, [0, 1])
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, IGNORE_INDEX, 8]]


def test_packed_token_budget_counts_real_tokens():
    lengths = [10, 10, 30, 5]
    packed = Batching(pad_id=0, prefix_len=4, packed=True)
    assert packed.tokens([10, 10]) == 4 + 6 + 6
    assert Batching(pad_id=0).tokens([10, 30]) == 60
    # computed: the prefix once either way; padded rows pad to the longest
    assert packed.computed_tokens([10, 10]) == 16
    assert Batching(pad_id=0, prefix_len=4).computed_tokens([10, 30]) == 4 + 2 * 26
    assert token_budget_chunks([0, 1, 2, 3], lengths, 42, packed.tokens) == [[0, 1, 2], [3]]
    assert token_budget_chunks([0, 1, 2, 3], lengths, 42) == [[0, 1], [2], [3]]


def attend_in_chunks(model, monkeypatch, chunk_tokens=8) -> list[int]:
    """Switch `model` to chunked packed attention (chunks of `chunk_tokens`, small enough to
    cut these short rows); returns a list that records each attention call's chunk count."""
    from transformers import AttentionInterface

    from tuneforge.models.packed_attention import packed_attention_forward

    calls: list[int] = []

    def spy(*args, **kwargs):
        calls.append(len(kwargs["packed_chunks"]) if "packed_chunks" in kwargs else 0)
        return packed_attention_forward(*args, **kwargs)

    model.config._attn_implementation = register_packed_attention()
    monkeypatch.setitem(AttentionInterface._global_mapping, PACKED_ATTENTION, spy)
    monkeypatch.setattr("tuneforge.models.packed_attention.CHUNK_TOKENS", chunk_tokens)
    monkeypatch.setattr("tuneforge.models.packed_attention.MIN_ROW_TOKENS", 0)
    return calls


@pytest.mark.parametrize("arch", ["llama", "gemma"])
@pytest.mark.parametrize("kind", ["lora", "full"])
@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("chunks", [False, True])
def test_packed_gives_the_padded_loss_and_gradients(
    adapted_tiny_model, monkeypatch, arch, kind, system, chunks
):
    model, tokenizer = adapted_tiny_model(arch, kind)
    model.train()
    split = tokenize_rows(rows(system=system), tokenizer, 512)
    prefix = shared_prefix_length(split)
    assert (prefix >= 10) == system
    if arch == "gemma":
        # Packing is exact while every example fits the sliding window (`batching_for` checks
        # it): make the longest example exactly the window, the boundary case.
        model.config.sliding_window = max(split.lengths)
        for module in model.modules():  # the layers keep their own copy (for their kwargs)
            if getattr(module, "sliding_window", None):
                module.sliding_window = model.config.sliding_window
    order = [3, 0, 5, 1, 4, 2]  # not length-sorted

    def loss_and_grads(batch, prefix_len):
        model.zero_grad()
        loss, count = answer_loss(model, batch, 0, prefix_len)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.item(), count.item(), grads

    padded = loss_and_grads(collate(split, order, tokenizer.pad_token_id), 0)
    calls = attend_in_chunks(model, monkeypatch) if chunks else []
    packed = loss_and_grads(collate_packed(split, order, prefix), 0)
    # every layer attended in several chunks (or none did)
    assert len(calls) == (model.config.num_hidden_layers if chunks else 0)
    assert all(count > 2 for count in calls)
    assert packed[1] == padded[1] > 0
    assert packed[0] == pytest.approx(padded[0], rel=1e-5)
    for name, grad in padded[2].items():
        torch.testing.assert_close(packed[2][name], grad, atol=1e-4, rtol=1e-3)


def test_batching_choice(tmp_path):
    model, tokenizer, _ = load_model(ModelConfig(name=str(build_tiny_causal_lm(tmp_path, "llama"))))
    split = tokenize_rows(rows(), tokenizer, 512)
    cfg = TrainConfig()
    lora = attach_method(model, MethodConfig(kind="lora"))
    chosen = batching_for(lora, cfg, split, tokenizer.pad_token_id)
    assert chosen.packed and chosen.prefix_len == shared_prefix_length(split)
    assert chosen.cache_prefix_len == 0
    off = cfg.model_copy(update={"data": cfg.data.model_copy(update={"packing": False})})
    padded = batching_for(lora, off, split, tokenizer.pad_token_id)
    assert not padded.packed and padded.cache_prefix_len == padded.prefix_len > 0


def test_no_packing_for_prompt_tuning_or_examples_past_the_window(tmp_path):
    model, tokenizer, _ = load_model(ModelConfig(name=str(build_tiny_causal_lm(tmp_path, "gemma"))))
    split = tokenize_rows(rows(), tokenizer, 512)
    cfg = TrainConfig()
    prompt = attach_method(model, MethodConfig(kind="prompt_tuning", num_virtual_tokens=4))
    assert not batching_for(prompt, cfg, split, tokenizer.pad_token_id).packed
    model2, _, _ = load_model(ModelConfig(name=str(build_tiny_causal_lm(tmp_path / "g", "gemma"))))
    model2.config.sliding_window = max(split.lengths) - 1
    assert not batching_for(model2, cfg, split, tokenizer.pad_token_id).packed
    model2.config.sliding_window = max(split.lengths)
    assert batching_for(model2, cfg, split, tokenizer.pad_token_id).packed


def test_pad_to_multiple_pads_packed_rows_apart_from_every_example():
    split = TokenizedSplit(
        input_ids=[[1, 2, 3, 4, 5], [1, 2, 3, 7, 8, 9]],
        labels=[[IGNORE_INDEX] * 4 + [5], [IGNORE_INDEX] * 4 + [8, 9]],
    )
    plain = collate_packed(split, [0, 1], prefix_len=2)
    batch = collate_packed(split, [0, 1], prefix_len=2, multiple=8, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 3, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["labels"][0, 9:].tolist() == [IGNORE_INDEX] * 7
    mask = batch["attention_mask"][0, 0]
    # the real tokens' mask is unchanged and never sees a pad token
    assert torch.equal(mask[:9, :9], plain["attention_mask"][0, 0])
    assert not mask[:9, 9:].any()
    # pad tokens see the prefix and the pad tokens up to themselves: no empty attention row
    assert mask[12].tolist() == [True] * 2 + [False] * 7 + [True] * 4 + [False] * 3
    assert Batching(pad_id=0, prefix_len=2, packed=True, multiple=8).tokens([5, 6]) == 16
    assert Batching(pad_id=0, multiple=8).tokens([5, 6]) == 16
    assert collate(split, [0, 1], pad_id=0, multiple=4)["input_ids"].shape == (2, 8)


@pytest.mark.parametrize(("packed", "chunks"), [(True, False), (True, True), (False, False)])
def test_pad_to_multiple_changes_neither_loss_nor_gradients(
    adapted_tiny_model, monkeypatch, packed, chunks
):
    model, tokenizer = adapted_tiny_model("llama")
    if chunks:
        attend_in_chunks(model, monkeypatch)
    split = tokenize_rows(rows(), tokenizer, 512)
    prefix = shared_prefix_length(split)
    order = [3, 0, 5, 1, 4, 2]

    def loss_and_grads(multiple):
        batching = Batching(tokenizer.pad_token_id, prefix, packed, multiple)
        batch = batching.collate(split, order)
        assert batch["input_ids"].shape[1] % multiple == 0
        model.zero_grad()
        loss, count = answer_loss(model, batch, 0, batching.cache_prefix_len, multiple)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.item(), count.item(), grads

    plain, rounded = loss_and_grads(1), loss_and_grads(32)
    assert rounded[1] == plain[1] > 0
    assert rounded[0] == pytest.approx(plain[0], rel=1e-5)
    for name, grad in plain[2].items():
        torch.testing.assert_close(rounded[2][name], grad, atol=1e-5, rtol=1e-4)


def test_a_run_padded_to_a_multiple_trains_and_validates_the_same(make_cfg, tmp_path):
    from tuneforge.train.run import train
    from tuneforge.train.tracking import read_metrics

    common = ("method.kind=lora", "method.dropout=0", "train.max_steps=4", "train.eval_every=2")
    train(make_cfg(*common), tmp_path / "plain", log=lambda s: None)
    train(make_cfg(*common, "data.pad_to_multiple_of=64"), tmp_path / "rounded", log=lambda s: None)

    def curve(run):
        rows = read_metrics(run)
        return [r["train/loss"] for r in rows if "train/loss" in r], [
            r["val/loss"] for r in rows if "val/loss" in r
        ]

    (plain_train, plain_val), (rounded_train, rounded_val) = (
        curve(tmp_path / "plain"),
        curve(tmp_path / "rounded"),
    )
    assert len(plain_val) == 2 and len(plain_train) == 4
    # the setting reaches the batching both runs used (the curves match because it is exact)
    from tuneforge.train.loop import plan_batching

    split = TokenizedSplit(input_ids=[[1, 2, 3]], labels=[[IGNORE_INDEX, 2, 3]])
    cfg = make_cfg(*common, "data.pad_to_multiple_of=64")
    assert plan_batching(cfg, split, 0, False, None).multiple == 64
    assert plan_batching(make_cfg(*common), split, 0, False, None).multiple == 1
    assert rounded_train == pytest.approx(plain_train, rel=1e-4)
    assert rounded_val == pytest.approx(plain_val, rel=1e-4)


def test_a_run_attending_in_chunks_trains_as_one_under_the_mask(make_cfg, tmp_path, monkeypatch):
    from tuneforge.train.run import load_for_training, train
    from tuneforge.train.tracking import read_metrics

    common = ("method.kind=lora", "method.dropout=0", "train.max_steps=4", "train.eval_every=2")
    chunks_cfg, mask_cfg = make_cfg(*common), make_cfg(*common, "data.packed_attention=mask")
    assert chunks_cfg.data.packed_attention == "chunks"  # the default
    assert load_for_training(chunks_cfg, "cpu")[0].config._attn_implementation == PACKED_ATTENTION
    assert load_for_training(mask_cfg, "cpu")[0].config._attn_implementation == "sdpa"
    monkeypatch.setattr("tuneforge.models.packed_attention.CHUNK_TOKENS", 16)  # rows of ~100
    monkeypatch.setattr("tuneforge.models.packed_attention.MIN_ROW_TOKENS", 0)
    train(chunks_cfg, tmp_path / "chunks", log=lambda s: None)
    train(mask_cfg, tmp_path / "mask", log=lambda s: None)

    def curve(run):
        rows = read_metrics(run)
        return [r[key] for r in rows for key in ("train/loss", "val/loss") if key in r]

    chunks, mask = curve(tmp_path / "chunks"), curve(tmp_path / "mask")
    assert len(chunks) == 6
    assert chunks == pytest.approx(mask, rel=1e-5)


def test_a_row_that_fits_one_chunk_runs_under_its_mask(adapted_tiny_model, monkeypatch):
    model, tokenizer = adapted_tiny_model("llama")
    split = tokenize_rows(rows(), tokenizer, 512)
    calls = attend_in_chunks(model, monkeypatch, chunk_tokens=10_000)
    batch = collate_packed(split, [0, 1, 2], shared_prefix_length(split))
    answer_loss(model, batch)[0].backward()
    assert calls == [0] * model.config.num_hidden_layers  # no plan given: one masked call each
