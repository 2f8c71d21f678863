"""Attending a packed row chunk by chunk computes what one attention under its mask computes."""

import pytest
import torch
import torch.nn.functional as F

from tuneforge.data.format import IGNORE_INDEX
from tuneforge.models.packed_attention import (
    PACKED_ATTENTION,
    ChunkPlan,
    packed_attention_forward,
    register_packed_attention,
    supports_packed_attention,
)
from tuneforge.train.data import TokenizedSplit, collate_packed


def packed_row(lengths, prefix_len, multiple=1):
    """A collate_packed batch of examples of these lengths (their first `prefix_len` shared)."""
    ids = [list(range(prefix_len)) + [100 + k] * (n - prefix_len) for k, n in enumerate(lengths)]
    split = TokenizedSplit(input_ids=ids, labels=[[IGNORE_INDEX] * len(i) for i in ids])
    return collate_packed(split, list(range(len(lengths))), prefix_len, multiple, pad_id=0)


def plan_for(batch, chunk_tokens, multiple=1, min_row_tokens=0):
    return ChunkPlan.from_row(
        batch["segment_ids"][0],
        batch["attention_mask"][0, 0],
        chunk_tokens,
        multiple,
        min_row_tokens,
    )


def test_chunks_cut_at_example_boundaries_once_long_enough():
    batch = packed_row([8, 9, 7, 10, 6], prefix_len=3)  # own: 5, 6, 4, 7, 3 after the prefix
    starts = [3, 8, 14, 18, 25]  # where each example begins in the row (length 28)
    plan = plan_for(batch, chunk_tokens=10)
    assert plan.length == 28 and plan.prefix_len == 3
    # chunk 0 = prefix + examples until 10 tokens; then cuts at the next example start
    assert plan.bounds == ((0, 14), (14, 25), (25, 28))
    assert all(start in (0, *starts) for start, _ in plan.bounds)
    # later chunks' keys: the 3 prefix tokens, then their own
    assert [m.shape for m in plan.masks] == [(1, 1, 14, 14), (1, 1, 11, 14), (1, 1, 3, 6)]
    assert len(plan_for(batch, chunk_tokens=1000)) == 1  # short row: one call, the whole mask
    assert len(plan_for(batch, chunk_tokens=10, min_row_tokens=29)) == 1  # below the minimum
    assert len(plan_for(batch, chunk_tokens=10, min_row_tokens=28)) == 3


@pytest.mark.parametrize("multiple", [1, 8])
def test_every_chunk_holds_every_key_its_queries_may_see(multiple):
    batch = packed_row([5, 9, 3, 7, 12, 4], prefix_len=3, multiple=8)
    mask = batch["attention_mask"][0, 0]
    plan = plan_for(batch, chunk_tokens=6, multiple=multiple)
    assert len(plan) > 2
    seen = torch.zeros_like(mask)
    for (start, end), chunk_mask in zip(plan.bounds, plan.masks, strict=True):
        keys = list(range(end)) if start == 0 else [*range(plan.prefix_len), *range(start, end)]
        assert chunk_mask.shape[2] % multiple == 0 and chunk_mask.shape[3] % multiple == 0
        seen[start:end, keys] = chunk_mask[0, 0, : end - start, : len(keys)]
        # padding: no real query sees a padded key; every padded query sees one key
        assert not chunk_mask[0, 0, : end - start, len(keys) :].any()
        assert chunk_mask[0, 0, end - start :].sum(dim=-1).eq(1).all()
    assert torch.equal(seen, mask)  # nothing allowed is outside a query's chunk


def test_a_prefix_segment_must_come_first():
    with pytest.raises(ValueError, match="prefix"):
        ChunkPlan.from_row(torch.tensor([0, 0, -1, 1]), torch.ones(4, 4, dtype=torch.bool))


class Attention(torch.nn.Module):
    num_key_value_groups = 3  # read by the SDPA fallback


def reference(query, key, value, mask, scaling):
    """SDPA over the whole row under its [T, T] mask, as the model runs without a plan."""
    groups = query.shape[1] // key.shape[1]
    out = F.scaled_dot_product_attention(
        query,
        key.repeat_interleave(groups, dim=1),
        value.repeat_interleave(groups, dim=1),
        attn_mask=mask,
        scale=scaling,
    )
    return out.transpose(1, 2)  # [1, T, H, D]


@pytest.mark.parametrize(
    ("lengths", "prefix_len", "multiple", "chunk_tokens", "chunk_multiple"),
    [
        ([5, 9, 3, 7, 12, 4], 3, 8, 6, 1),
        ([5, 9, 3, 7, 12, 4], 3, 8, 6, 8),  # chunks padded to a multiple of 8
        ([6, 2, 8, 5], 0, 1, 4, 1),  # no shared prefix
        ([6, 2, 8, 5], 0, 1, 4, 16),
        ([12, 5, 10], 2, 1, 1, 1),  # one example per chunk
        ([12, 5, 10], 2, 1, 1000, 1),  # one chunk
    ],
)
def test_outputs_and_gradients_equal_the_masked_row(
    lengths, prefix_len, multiple, chunk_tokens, chunk_multiple
):
    torch.manual_seed(0)
    batch = packed_row(lengths, prefix_len, multiple)
    t = batch["input_ids"].shape[1]
    heads, kv_heads, dim, scaling = 6, 2, 8, 0.3
    query = torch.randn(1, heads, t, dim, requires_grad=True)
    key = torch.randn(1, kv_heads, t, dim, requires_grad=True)
    value = torch.randn(1, kv_heads, t, dim, requires_grad=True)
    plan = plan_for(batch, chunk_tokens, chunk_multiple)
    weights = torch.randn(1, t, heads, dim)  # a loss that weighs every output differently

    def run(fn):
        for tensor in (query, key, value):
            tensor.grad = None
        out = fn()
        (out * weights).sum().backward()
        return out.detach(), [tensor.grad.clone() for tensor in (query, key, value)]

    expected = run(lambda: reference(query, key, value, batch["attention_mask"], scaling))
    got = run(
        lambda: packed_attention_forward(
            Attention(), query, key, value, None, scaling=scaling, packed_chunks=plan
        )[0]
    )
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    for grad, want in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-5)


def test_without_a_matching_plan_it_is_sdpa():
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5)
    out, _ = packed_attention_forward(Attention(), query, key, value, mask, scaling=0.3)
    torch.testing.assert_close(out, reference(query, key, value, mask, 0.3))
    other_row = plan_for(packed_row([3, 4], 1), 2)  # a plan for another row is not used
    out, _ = packed_attention_forward(
        Attention(), query, key, value, mask, scaling=0.3, packed_chunks=other_row
    )
    torch.testing.assert_close(out, reference(query, key, value, mask, 0.3))


def test_registered_and_chosen_only_for_sdpa_models_without_softcapping():
    from transformers import AttentionInterface, LlamaConfig

    assert register_packed_attention() == PACKED_ATTENTION
    assert AttentionInterface()[PACKED_ATTENTION] is packed_attention_forward

    class Model:
        def __init__(self, implementation, softcap=None):
            self.config = LlamaConfig()
            self.config._attn_implementation = implementation
            self.config.attn_logit_softcapping = softcap

    assert supports_packed_attention(Model("sdpa"))
    assert not supports_packed_attention(Model("eager"))
    assert not supports_packed_attention(Model("sdpa", softcap=50.0))
