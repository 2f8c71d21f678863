"""Perplexity on held-out data: of the answers alone, and of whole conversations.

answer perplexity   = exp(mean loss over answer tokens), the quantity training minimises
                      (`train.loss.answer_loss`, the same masking and prefix sharing);
sequence perplexity = exp(mean loss over every token after the first: system, user and answer).

A fine-tune should lower the answer perplexity a lot; a large rise in sequence perplexity on
the prompt side hints that the model drifted on text it was not trained to produce.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tuneforge.data.format import IGNORE_INDEX
from tuneforge.models.architecture import is_prompt_learning
from tuneforge.train.data import collate, shared_prefix_length, tokenize_rows
from tuneforge.train.loss import answer_loss, virtual_token_offset


@torch.inference_mode()
def perplexity(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    max_seq_len: int = 2048,
    batch_size: int = 16,
) -> dict[str, float] | None:
    """{"answer": float, "sequence": float} over chat `rows`; None if no row has an answer."""
    split = tokenize_rows(rows, tokenizer, max_seq_len)
    if len(split) == 0:
        return None
    device = next(model.parameters()).device
    offset = virtual_token_offset(model)
    prefix_len = 0 if is_prompt_learning(model) else shared_prefix_length(split)
    order = sorted(range(len(split)), key=lambda i: -split.lengths[i])
    totals = {"answer": [0.0, 0], "sequence": [0.0, 0]}
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = {
            k: v.to(device) for k, v in collate(split, indices, tokenizer.pad_token_id).items()
        }
        loss, count = answer_loss(model, batch, offset, prefix_len)
        totals["answer"][0] += float(loss)
        totals["answer"][1] += int(count)
        every = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        loss, count = answer_loss(model, {**batch, "labels": every}, offset, 0)
        totals["sequence"][0] += float(loss)
        totals["sequence"][1] += int(count)
    return {name: math.exp(total / max(count, 1)) for name, (total, count) in totals.items()}
