"""Batch state for decoding, and exact scoring of label continuations after a prompt.

`eval.predict.Predictor` drives these; see its module docstring for the methods.

A batch state holds one batch's rows while they decode: `logits` after the prompt, then one
token per row per step (`advance`), finished rows leaving the batch (`keep`).

- `CachedBatch` decodes with the KV cache. After the shared prefix (computed once per call by
  the predictor), the per-example suffixes are padded on the left of the suffix ("middle
  padding": [prefix][pad][suffix]), so every row's last prompt token sits in the last column,
  with explicit position ids that skip the padding; finished rows leave the batch
  (`batch_select_indices`); batches with plain (full-attention) caches can be concatenated
  into one, shorter caches padded on the left (`concatenate`).
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
        cache: Any,
        mask: torch.Tensor,
        next_position: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        self.model = model
        self.cache = cache
        self.mask = mask  # [B, cached tokens]: 1 where a cached token is real, 0 for padding
        self.next_position = next_position  # [B]: the position id of each row's next token
        self.logits = logits  # [B, V]: next-token logits (float32)

    @classmethod
    def prefill(
        cls,
        model: Any,
        sequences: list[list[int]],
        prefix_len: int,
        prefix_cache: Any,
        pad_id: int,
    ) -> CachedBatch:
        """Run the prompts (after the shared prefix, whose cache is copied) and keep their cache."""
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
        past = copy.deepcopy(prefix_cache) if prefix_len else None
        if past is not None and size > 1:
            _repeat_rows(past, size)
        mask = mask.to(device)
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask,
            position_ids=positions.to(device),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        next_position = torch.tensor(
            [prefix_len + len(s) for s in suffixes], dtype=torch.long, device=device
        )
        return cls(model, out.past_key_values, mask, next_position, out.logits[:, -1].float())

    @staticmethod
    def has_plain_cache(batch: Any) -> bool:
        """Whether the batch's cache is plain full-attention layers (`concatenate`, `row_view`).

        Sliding-window layers keep a window of another length than the mask, quantized layers
        keep their states in another form; batches with those decode and score on their own.
        """
        from transformers.cache_utils import DynamicLayer

        layers = getattr(getattr(batch, "cache", None), "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    @classmethod
    def concatenate(cls, batches: Sequence[CachedBatch]) -> CachedBatch:
        """One batch of all rows of `batches` (each `has_plain_cache`), rows in order.

        Caches of different lengths are padded on the left (zero states, mask 0): position ids
        are explicit, so a row's real tokens keep their positions.
        """
        if len(batches) == 1:
            return batches[0]
        longest = max(b.mask.shape[1] for b in batches)
        pads = [longest - b.mask.shape[1] for b in batches]
        first = batches[0]
        for n, layer in enumerate(first.cache.layers):
            for attr in ("keys", "values"):
                states = [getattr(b.cache.layers[n], attr) for b in batches]
                # [rows, heads, length, head_dim]: pad the length on the left
                padded = [
                    torch.nn.functional.pad(t, (0, 0, pad, 0))
                    for t, pad in zip(states, pads, strict=True)
                ]
                setattr(layer, attr, torch.cat(padded, dim=0))
        mask = torch.cat(
            [
                torch.nn.functional.pad(b.mask, (pad, 0))
                for b, pad in zip(batches, pads, strict=True)
            ]
        )
        return cls(
            first.model,
            first.cache,
            mask,
            torch.cat([b.next_position for b in batches]),
            torch.cat([b.logits for b in batches]),
        )

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


def _repeat_rows(cache: Any, size: int) -> None:
    """A one-row cache repeated to `size` rows, in place.

    A plain layer gets expanded views (no copy): its next update concatenates the new states
    onto them, which is the one copy needed anyway. Other layer types copy the rows.
    """
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is DynamicLayer and layer.get_seq_length() > 0:
            layer.keys = layer.keys.expand(size, -1, -1, -1)
            layer.values = layer.values.expand(size, -1, -1, -1)
        else:
            layer.batch_repeat_interleave(size)


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
    """Label continuations (each label's tokens after its first) packed into one row per prompt.

    `feed`/`target`: [R, T] tokens fed and predicted; `segment`: [R, T] which label each
    position belongs to (`n_labels` on padding); `offset`: [R, T] position within its label
    (0-based, after the prompt). R is 1 when every prompt scores every label (the row is
    shared), else one row per prompt with its own labels, right-padded.
    """

    feed: torch.Tensor
    target: torch.Tensor
    segment: torch.Tensor
    offset: torch.Tensor
    n_labels: int

    @classmethod
    def build(
        cls, sequences: Sequence[Sequence[int]], subsets: Sequence[Sequence[int]] | None = None
    ) -> PackedContinuations:
        """All labels in one shared row, or each prompt's `subsets[row]` (label indices)."""
        n_labels = len(sequences)
        packs = []
        for subset in [range(n_labels)] if subsets is None else subsets:
            feed, target, segment, offset = [], [], [], []
            for n in subset:
                seq = sequences[n]
                feed += seq[:-1]
                target += seq[1:]
                segment += [n] * (len(seq) - 1)
                offset += range(len(seq) - 1)
            packs.append((feed, target, segment, offset))
        width = max(len(pack[0]) for pack in packs)
        tensors = [torch.zeros((len(packs), width), dtype=torch.long) for _ in range(4)]
        tensors[2].fill_(n_labels)
        for row, pack in enumerate(packs):
            for tensor, values in zip(tensors, pack, strict=True):
                tensor[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        return cls(*tensors, n_labels)

    @property
    def length(self) -> int:
        return int(self.feed.shape[1])

    def score(self, model: Any, batch: CachedBatch) -> torch.Tensor:
        """[B, N]: sum of log p over each label's continuation, given each row's prompt.

        Labels a row does not score (not in its subset) get 0. The batch's cache grows by the
        packed tokens (score a `row_view` to keep it).
        """
        device = batch.mask.device
        rows, width = batch.mask.shape[0], self.length
        if width == 0:
            return torch.zeros((rows, self.n_labels), device=device)
        feed, target, segment, offset = (
            t.to(device).expand(rows, -1)
            for t in (self.feed, self.target, self.segment, self.offset)
        )
        # [B, T, T]: same label, not later; [B, T, cache + T]: the prompt's own cached tokens too.
        own = (segment[:, :, None] == segment[:, None, :]) & (
            offset[:, None, :] <= offset[:, :, None]
        )
        allowed = torch.cat([batch.mask.bool()[:, None, :].expand(rows, width, -1), own], dim=2)
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        out = model(
            input_ids=feed,
            attention_mask=mask[:, None],
            position_ids=batch.next_position[:, None] + offset,
            past_key_values=batch.cache,
            use_cache=True,
        )
        logits = out.logits.float()  # [B, T, V]
        picked = logits.gather(-1, target[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        picked = picked.masked_fill(segment == self.n_labels, 0.0)
        totals = torch.zeros((rows, self.n_labels + 1), dtype=picked.dtype, device=device)
        return totals.scatter_add_(1, segment, picked)[:, : self.n_labels]


def row_view(batch: CachedBatch, start: int, stop: int) -> CachedBatch:
    """Rows start:stop of a batch whose cache `has_plain_cache`, sharing its cached states.

    A forward on the view concatenates onto slices of the states (new tensors), so the
    original batch is left as it was: it can be scored again.
    """
    cache = copy.copy(batch.cache)
    cache.layers = []
    for layer in batch.cache.layers:
        part = copy.copy(layer)
        part.keys, part.values = layer.keys[start:stop], layer.values[start:stop]
        cache.layers.append(part)
    return CachedBatch(
        batch.model,
        cache,
        batch.mask[start:stop],
        batch.next_position[start:stop],
        batch.logits[start:stop],
    )


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
