"""Perplexity on held-out data: of the answers alone, and of whole conversations.

answer perplexity   = exp(mean loss over answer tokens), the quantity training minimises
                      (`train.loss.answer_loss`, the same masking and prefix sharing);
sequence perplexity = exp(mean loss over every token after the first: system, user and answer).

A fine-tune should lower the answer perplexity a lot; a large rise in sequence perplexity on
the prompt side hints that the model drifted on text it was not trained to produce.

The sequence perplexity needs the LM head at every token, which a large vocabulary makes the
dearest thing an eval does (Gemma 3's 262k entries: 517 s of an 11-minute CPU eval of 1,009
Banking77 rows, against 42 s to classify them), so it is taken over a seeded sample of at most
`sequence_rows` rows; the answer perplexity, at answer tokens only, covers every row.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import torch

from tuneforge.data.format import IGNORE_INDEX
from tuneforge.models.architecture import is_prompt_learning
from tuneforge.train.data import collate, shared_prefix_length, tokenize_rows
from tuneforge.train.loss import answer_loss, virtual_token_offset

PERPLEXITY_SEQUENCE_ROWS = 128
"""Rows whose whole sequences `tuneforge eval` scores (the module docstring says why)."""


def _batches(
    split: Any, indices: list[int], batch_size: int, pad_id: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(indices), batch_size):
        piece = indices[start : start + batch_size]
        yield {k: v.to(device) for k, v in collate(split, piece, pad_id).items()}


def sequence_sample(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """The row indices (sorted) whose whole sequences are scored: all, or a seeded `limit`."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


@torch.inference_mode()
def perplexity(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    max_seq_len: int = 2048,
    batch_size: int = 16,
    sequence_rows: int | None = PERPLEXITY_SEQUENCE_ROWS,
) -> dict[str, float] | None:
    """{"answer": float, "sequence": float} over chat `rows` (the sequence one over
    `sequence_sample(len, sequence_rows)` of them); None if no row has an answer."""
    split = tokenize_rows(rows, tokenizer, max_seq_len)
    if len(split) == 0:
        return None
    device = next(model.parameters()).device
    offset = virtual_token_offset(model)
    prefix_len = 0 if is_prompt_learning(model) else shared_prefix_length(split)
    # Longest first: similar lengths share a batch, and memory peaks at once if it must.
    order = sorted(range(len(split)), key=lambda i: -split.lengths[i])
    sampled = set(sequence_sample(len(split), sequence_rows))
    totals = {"answer": [0.0, 0], "sequence": [0.0, 0]}
    for batch in _batches(split, order, batch_size, tokenizer.pad_token_id, device):
        loss, count = answer_loss(model, batch, offset, prefix_len)
        totals["answer"][0] += float(loss)
        totals["answer"][1] += int(count)
    in_sample = [i for i in order if i in sampled]
    for batch in _batches(split, in_sample, batch_size, tokenizer.pad_token_id, device):
        every = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        loss, count = answer_loss(model, {**batch, "labels": every}, offset, 0)
        totals["sequence"][0] += float(loss)
        totals["sequence"][1] += int(count)
    return {name: math.exp(total / max(count, 1)) for name, (total, count) in totals.items()}
