"""Attention over a long packed row, a few examples at a time.

A packed training row holds a shared prefix followed by several examples, [prefix][ex 1][ex 2]...,
and each example may see only the prefix and its own earlier tokens. Given as one [T, T] block
mask, SDPA scores every query against every key of the row and throws most of them away, so
its cost grows with T^2: on SmolLM2's shapes (CPU, float32, forward + backward, one layer) 2.2 ms
at T = 187 but ~90 ms at T = 1,575 (benchmarks/packed_attention.py, docs/benchmarks.md).

Here a row of `MIN_ROW_TOKENS` or more is cut at example boundaries into chunks of about
`CHUNK_TOKENS` tokens. A chunk's
queries attend to the shared prefix and to the chunk itself -- every key any of its examples may
see -- under the block mask's slice for them: the same scores, softmax and gradients as the
whole row, at a cost that grows with T x CHUNK_TOKENS. A shorter row is one SDPA call under
its mask, exactly as without this module. (Cutting at every example instead
needs gathers whose cost, on this CPU, outweighed the smaller attention below ~400 tokens.)

Registered with transformers as the attention implementation `PACKED_ATTENTION`; it chunks only
when the forward is given `packed_chunks=ChunkPlan(...)` for a single row of the plan's length,
and is plain SDPA otherwise (padded batches, generation), so a model can keep it for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.data.format import round_up

PACKED_ATTENTION = "tuneforge_packed_sdpa"
# Below ~400 tokens a masked SDPA call costs less than quadratically (fixed costs dominate);
# chunks of this size keep each call there while the row's cost grows linearly.
CHUNK_TOKENS = 256
# Whole training runs (SmolLM2 LoRA, float32): rows of ~600 tokens trained no faster in chunks
# and peaked ~8 % higher; ~750 tokens 1.12x faster, ~1,500 tokens 1.38x (docs/benchmarks.md).
MIN_ROW_TOKENS = 640


@dataclass(frozen=True)
class ChunkPlan:
    """How one packed row of `length` tokens is attended chunk by chunk.

    bounds: (start, end) of each chunk, covering the row in order; the first starts at 0 and
      holds the prefix, the others start and end at example boundaries.
    masks: per chunk, bool [1, 1, queries, keys] (True = may attend) over its keys: the
      first chunk's own tokens; the others' the prefix's `prefix_len` tokens, then their own.
    multiple: queries and keys are padded up to a multiple of it (zeros that no real query
      sees; padded queries see the first key and are dropped), so chunks come in a few shapes:
      CPU bfloat16 attention builds a kernel per shape (`data.pad_to_multiple_of`).
    """

    length: int
    prefix_len: int
    bounds: tuple[tuple[int, int], ...]
    masks: tuple[torch.Tensor, ...]
    multiple: int = 1

    @classmethod
    def from_row(
        cls,
        segment_ids: torch.Tensor,
        mask: torch.Tensor,
        chunk_tokens: int | None = None,
        multiple: int = 1,
        min_row_tokens: int | None = None,
    ) -> ChunkPlan:
        """segment_ids [T]: -1 on the shared prefix (at the start), then one id per contiguous
        example; mask [T, T]: the row's block mask (`collate_packed`); chunk_tokens and
        min_row_tokens (a shorter row is one chunk): default `CHUNK_TOKENS`, `MIN_ROW_TOKENS`."""
        chunk_tokens = chunk_tokens or CHUNK_TOKENS
        min_row_tokens = MIN_ROW_TOKENS if min_row_tokens is None else min_row_tokens
        ids = segment_ids.reshape(-1).tolist()
        length = len(ids)
        prefix_len = next((i for i, s in enumerate(ids) if s != -1), length)
        if -1 in ids[prefix_len:]:
            raise ValueError("segment_ids: the shared prefix (-1) must come first")
        example_starts = [i for i in range(prefix_len, length) if i == 0 or ids[i] != ids[i - 1]]
        cuts = [0]
        for start in example_starts if length >= min_row_tokens else []:
            if start - cuts[-1] >= chunk_tokens:
                cuts.append(start)
        bounds = tuple(zip(cuts, [*cuts[1:], length], strict=True))
        mask = mask.reshape(length, length)
        masks = []
        for start, end in bounds:
            own = mask[start:end, start:end]
            if start:
                own = torch.cat([mask[start:end, :prefix_len], own], dim=1)
            if multiple > 1:  # else the slice as it is: no copy of a short row's mask per step
                queries, keys = own.shape
                padded = own.new_zeros(round_up(queries, multiple), round_up(keys, multiple))
                padded[:queries, :keys] = own
                padded[queries:, 0] = True  # padded queries: one key, so no row is empty
                own = padded
            masks.append(own[None, None])
        return cls(length, prefix_len, bounds, tuple(masks), multiple)

    def __len__(self) -> int:
        return len(self.bounds)


def chunk_plan(
    segment_ids: torch.Tensor, mask: torch.Tensor, multiple: int = 1
) -> ChunkPlan | None:
    """The plan for a packed training row, or None when the row attends as one masked call:
    shorter than `MIN_ROW_TOKENS` (decided from its shape, before any work: this runs every
    step) or with no cut point. Arguments as `ChunkPlan.from_row`'s."""
    if segment_ids.shape[-1] < MIN_ROW_TOKENS:
        return None
    plan = ChunkPlan.from_row(segment_ids, mask, multiple=multiple)
    return plan if len(plan) > 1 else None


def _pad_tokens(states: torch.Tensor, length: int) -> torch.Tensor:
    """[1, heads, n, D] -> [1, heads, length, D], zeros after the n tokens."""
    return F.pad(states, (0, 0, 0, length - states.shape[2]))


def _repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hkv, K, D] -> [B, Hkv * groups, K, D] (grouped-query attention)."""
    if groups == 1:
        return states
    b, heads, k, d = states.shape
    return states[:, :, None].expand(b, heads, groups, k, d).reshape(b, heads * groups, k, d)


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: query [1, H, T, D], key/value [1, Hkv, T, D] ->
    output [1, T, H, D]. Without a matching `packed_chunks` plan: SDPA as usual."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan: ChunkPlan | None = kwargs.pop("packed_chunks", None)
    shape = (query.shape[0], query.shape[2], key.shape[2])
    if plan is None or shape != (1, plan.length, plan.length):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("softcap") is not None:
        raise ValueError("packed attention: logit soft-capping is not supported")
    groups = query.shape[1] // key.shape[1]
    p = plan.prefix_len
    outputs = []
    for (start, end), mask in zip(plan.bounds, plan.masks, strict=True):
        queries = query[:, :, start:end]
        if start == 0:
            keys, values = key[:, :, :end], value[:, :, :end]
        else:  # [1, Hkv, P + (end - start), D]: the prefix, then the chunk
            keys = torch.cat([key[:, :, :p], key[:, :, start:end]], dim=2)
            values = torch.cat([value[:, :, :p], value[:, :, start:end]], dim=2)
        if plan.multiple > 1:  # the mask's padded shape
            queries = _pad_tokens(queries, mask.shape[2])
            keys, values = _pad_tokens(keys, mask.shape[3]), _pad_tokens(values, mask.shape[3])
        chunk_out = F.scaled_dot_product_attention(
            queries,
            _repeat_heads(keys, groups),
            _repeat_heads(values, groups),
            attn_mask=mask,
            dropout_p=dropout,
            scale=scaling,
        )  # [1, H, queries, D]
        outputs.append(chunk_out[:, :, : end - start])
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Make `PACKED_ATTENTION` known to transformers (idempotent); returns its name. Masks are
    built as for SDPA (it is SDPA whenever no plan is given)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)
    return PACKED_ATTENTION


def supports_packed_attention(model: Any) -> bool:
    """Whether `model` attends through transformers' SDPA (or this) without logit soft-capping,
    so that chunked attention can stand in for it."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    text = getattr(config, "text_config", None) or config
    if getattr(text, "attn_logit_softcapping", None) is not None:
        return False
    return getattr(config, "_attn_implementation", None) in ("sdpa", PACKED_ATTENTION)
