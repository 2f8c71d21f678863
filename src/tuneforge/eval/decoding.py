"""Batch state for decoding, and exact scoring of label continuations after a prompt.

`eval.predict.Predictor` drives these; see its module docstring for the methods.

A batch state holds one batch's rows while they decode: `logits` after the prompt, then one
token per row per step (`advance`), finished rows leaving the batch (`keep`).

- `CachedBatch` decodes with the KV cache. After the shared prefix (computed once per call by
  the predictor), the per-example suffixes are padded on the left of the suffix ("middle
  padding": [prefix][pad][suffix]), so every row's last prompt token sits in the last column,
  with explicit position ids that skip the padding; finished rows leave the batch
  (`batch_select_indices`).
- `RecomputedBatch`: prompt tuning / prefix tuning feed virtual tokens into every forward call,
  which a hand-fed KV cache would bypass; for those models the predictor recomputes whole
  right-padded sequences at each step instead (exactly as training computes them) -- slower,
  same results.

Exact label scoring (`Predictor.score_labels`) scores every label's continuation after a
prompt: `PackedContinuations` packs them into one row after a `CachedBatch`'s cache (a block
mask keeps the labels apart), `repeated_cache_scores` repeats the cache once per label instead
(sliding-window models), and `continuation_logprobs` runs whole sequences without a cache (the
reference computation, for prompt/prefix-tuned models).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from tuneforge.train.loss import virtual_token_offset


def model_device(model: Any) -> torch.device:
    """The device the model's parameters are on."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model always has parameters
        return torch.device("cpu")


class CachedBatch:
    """A batch decoding with a KV cache: [shared prefix][left pad][suffix][generated...]."""

    def __init__(
        self,
        model: Any,
        sequences: list[list[int]],
        prefix_len: int,
        prefix_cache: Any,
        pad_id: int,
    ) -> None:
        self.model = model
        device = model_device(model)
        size = len(sequences)
        suffixes = [seq[prefix_len:] for seq in sequences]
        width = max(len(s) for s in suffixes)
        ids = torch.full((size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((size, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        positions = torch.full((size, width), prefix_len, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            start = width - len(suffix)
            ids[row, start:] = torch.tensor(suffix)
            mask[row, prefix_len + start :] = 1
            positions[row, start:] = torch.arange(prefix_len, prefix_len + len(suffix))
        past = None
        if prefix_len:
            past = copy.deepcopy(prefix_cache)
            if size > 1:
                past.batch_repeat_interleave(size)
        self.mask = mask.to(device)
        self.next_position = torch.tensor(
            [prefix_len + len(s) for s in suffixes], dtype=torch.long, device=device
        )
        out = model(
            input_ids=ids.to(device),
            attention_mask=self.mask,
            position_ids=positions.to(device),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache = out.past_key_values
        self.logits = out.logits[:, -1].float()

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; the next-token logits [rows, V]."""
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_position[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_position = self.next_position + 1
        self.cache = out.past_key_values
        self.logits = out.logits[:, -1].float()
        return self.logits

    def keep(self, rows: torch.Tensor) -> None:
        """Drop the rows not in `rows` (indices into the current batch)."""
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]
        self.next_position = self.next_position[rows]
        self.logits = self.logits[rows]


class RecomputedBatch:
    """A batch for prompt/prefix-tuned models: whole right-padded sequences at every step."""

    def __init__(self, model: Any, sequences: list[list[int]], pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.sequences = [list(seq) for seq in sequences]
        self.logits = _last_logits(model, self.sequences, pad_id)

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        for seq, token in zip(self.sequences, tokens.tolist(), strict=True):
            seq.append(int(token))
        self.logits = _last_logits(self.model, self.sequences, self.pad_id)
        return self.logits

    def keep(self, rows: torch.Tensor) -> None:
        self.sequences = [self.sequences[i] for i in rows.tolist()]
        self.logits = self.logits[rows]


def _right_padded(
    sequences: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def _last_logits(model: Any, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """Next-token logits after each whole sequence [rows, V], computed as training does."""
    device = model_device(model)
    ids, mask = _right_padded(sequences, pad_id, device)
    last = torch.tensor([len(seq) - 1 for seq in sequences], device=device)
    keep, where = torch.unique(last, return_inverse=True)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        logits_to_keep=keep + virtual_token_offset(model),
        use_cache=False,
    )
    return out.logits[torch.arange(len(sequences), device=device), where].float()


@dataclass
class PackedContinuations:
    """All label continuations (each label's tokens after its first) packed into one row.

    `feed`/`target`: [T] tokens fed and predicted; `segment`: [T] which label each position
    belongs to; `offset`: [T] position within its label (0-based, after the prompt).
    """

    feed: torch.Tensor
    target: torch.Tensor
    segment: torch.Tensor
    offset: torch.Tensor
    n_labels: int

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> PackedContinuations:
        feed, target, segment, offset = [], [], [], []
        for n, seq in enumerate(sequences):
            feed += seq[:-1]
            target += seq[1:]
            segment += [n] * (len(seq) - 1)
            offset += range(len(seq) - 1)
        as_long = partial(torch.tensor, dtype=torch.long)
        return cls(
            as_long(feed), as_long(target), as_long(segment), as_long(offset), len(sequences)
        )

    @property
    def length(self) -> int:
        return int(self.feed.numel())

    def score(self, model: Any, batch: CachedBatch) -> torch.Tensor:
        """[B, N]: sum of log p over each label's continuation, given each row's prompt."""
        device = batch.mask.device
        rows, width = batch.mask.shape[0], self.length
        segment, offset = self.segment.to(device), self.offset.to(device)
        # [T, T]: same label, not later; [B, T, cache + T]: the prompt's own cached tokens too.
        own = (segment[:, None] == segment[None, :]) & (offset[None, :] <= offset[:, None])
        allowed = torch.cat(
            [
                batch.mask.bool()[:, None, :].expand(rows, width, -1),
                own[None].expand(rows, -1, -1),
            ],
            dim=2,
        )
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        out = model(
            input_ids=self.feed.to(device)[None].expand(rows, -1),
            attention_mask=mask[:, None],
            position_ids=batch.next_position[:, None] + offset[None],
            past_key_values=batch.cache,
            use_cache=True,
        )
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # [B, T, V]
        picked = logprobs.gather(-1, self.target.to(device)[None, :, None].expand(rows, -1, 1))
        totals = torch.zeros((rows, self.n_labels), dtype=picked.dtype, device=device)
        return totals.index_add_(1, segment, picked.squeeze(-1))


def repeated_cache_scores(
    model: Any, batch: CachedBatch, sequences: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """[B, N]: label continuation log-probs with the batch's cache repeated once per label."""
    n_labels, rows = len(sequences), batch.mask.shape[0]
    width = max(len(seq) for seq in sequences) - 1
    device = batch.mask.device
    batch.cache.batch_repeat_interleave(n_labels)
    mask = batch.mask.repeat_interleave(n_labels, dim=0)
    start = batch.next_position.repeat_interleave(n_labels)
    feed = torch.full((n_labels, width), pad_id, dtype=torch.long)
    target = torch.zeros((n_labels, width), dtype=torch.long)
    valid = torch.zeros((n_labels, width), dtype=torch.bool)
    for n, seq in enumerate(sequences):
        feed[n, : len(seq) - 1] = torch.tensor(seq[:-1])
        target[n, : len(seq) - 1] = torch.tensor(seq[1:])
        valid[n, : len(seq) - 1] = True
    feed, target, valid = (t.repeat(rows, 1).to(device) for t in (feed, target, valid))
    out = model(
        input_ids=feed,
        attention_mask=torch.cat([mask, valid.long()], dim=1),
        position_ids=start[:, None] + torch.arange(width, device=device),
        past_key_values=batch.cache,
        use_cache=True,
    )
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)
    picked = logprobs.gather(-1, target[..., None]).squeeze(-1) * valid
    return picked.sum(dim=1).double().view(rows, n_labels)


def continuation_logprobs(
    model: Any, prompt: list[int], continuations: list[list[int]], pad_id: int
) -> np.ndarray:
    """Sum log p(continuation | prompt) per continuation, by whole-sequence forwards.

    The reference computation (no cache); used for prompt/prefix-tuned models.
    """
    device = model_device(model)
    sequences = [prompt + cont for cont in continuations]
    ids, mask = _right_padded(sequences, pad_id, device)
    offset = virtual_token_offset(model)
    start = len(prompt) - 1  # logits at t predict token t+1
    width = max(len(c) for c in continuations)
    keep = torch.arange(start, start + width, device=device)
    out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep + offset, use_cache=False)
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # [R, width, V]
    totals = np.zeros(len(continuations))
    for row, cont in enumerate(continuations):
        positions = torch.arange(len(cont), device=device)
        targets = torch.tensor(cont, device=device)
        totals[row] = float(logprobs[row, positions, targets].sum())
    return totals
