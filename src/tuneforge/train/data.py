"""Training data: a `prepare` output tokenized once (and cached), batched, collated.

Batches are a pure function of (seed, epoch), so a resumed run replays exactly the batches the
interrupted one would have seen, skipping those it had finished. A micro-batch becomes tensors
one of two ways (`Batching`): right-padded rows, or all examples packed into one row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.convert import ROLES
from tuneforge.data.format import IGNORE_INDEX, round_up, tokenize_example
from tuneforge.errors import TuneforgeError
from tuneforge.fsutil import sha256_file

TOKENIZED_FORMAT = 1  # bump when the cached representation changes


@dataclass
class TokenizedSplit:
    """Token ids and labels of one split, unpadded. labels use IGNORE_INDEX outside answers."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0  # examples whose prompt start was cut to fit max_seq_len
    dropped: int = 0  # examples with no answer token left after truncation

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def read_split(path: Path) -> list[dict[str, Any]]:
    """Rows of a chat JSONL file written by `prepare` (or by hand in the same form).

    Each row's messages must be role/content objects ending with the assistant's answer: that
    answer is what training learns and evaluation scores.
    """
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                row = _split_row(path, number, line)
                if row is not None:
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise TuneforgeError(
            f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); use a `tuneforge prepare` "
            "output"
        ) from None
    return rows


def _split_row(path: Path, number: int, line: str) -> dict[str, Any] | None:
    """One row of `read_split`, checked; None for a blank line."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = getattr(exc, "msg", "nested too deeply")
        raise TuneforgeError(f"{path}:{number}: malformed JSON ({reason})") from None
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        raise TuneforgeError(
            f"{path}:{number}: expected an object with 'messages'; use a `tuneforge prepare` output"
        )
    messages = row["messages"]
    if not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise TuneforgeError(
            f"{path}:{number}: every message needs a role (system, user or assistant) and "
            "string content; use a `tuneforge prepare` output"
        )
    if (
        not messages
        or messages[-1]["role"] != "assistant"
        or not any(m["role"] == "user" for m in messages)
    ):
        raise TuneforgeError(
            f"{path}:{number}: must end with the assistant's answer (what is trained and "
            "scored) after at least one user turn; use a `tuneforge prepare` output"
        )
    return row


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a tokenizer + template, for the tokenization cache key."""
    digest = hashlib.sha256()
    digest.update(str(tokenizer.chat_template).encode())
    digest.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


def tokenize_rows(rows: list[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> TokenizedSplit:
    """Render and mask each conversation; keep the end (the answer) when it is too long."""
    split = TokenizedSplit([], [])
    for row in rows:
        tokens = tokenize_example(tokenizer, row["messages"])
        ids, labels = tokens.input_ids, tokens.labels
        if len(ids) > max_seq_len:
            split.truncated += 1
            ids, labels = ids[-max_seq_len:], labels[-max_seq_len:]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            split.dropped += 1
            continue
        split.input_ids.append(ids)
        split.labels.append(labels)
    return split


def load_tokenized(
    path: Path, tokenizer: Any, max_seq_len: int, cache_dir: Path | None
) -> TokenizedSplit:
    """Tokenize a split, reusing a cached result keyed by file, tokenizer and length."""
    key_source = (
        f"{TOKENIZED_FORMAT}:{sha256_file(path)}:{tokenizer_fingerprint(tokenizer)}:{max_seq_len}"
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.pt" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        data = torch.load(cached, weights_only=True)
        return TokenizedSplit(data["input_ids"], data["labels"], data["truncated"], data["dropped"])
    split = tokenize_rows(read_split(path), tokenizer, max_seq_len)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Per-process temp name: nodes of a multi-node run may share one cache directory.
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        torch.save(
            {
                "input_ids": split.input_ids,
                "labels": split.labels,
                "truncated": split.truncated,
                "dropped": split.dropped,
            },
            tmp,
        )
        tmp.replace(cached)
    return split


def epoch_batches(
    lengths: list[int],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
    group_window: int = 8,
) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch, deterministic in (seed, epoch).

    Length grouping sorts within shuffled windows of `group_window` batches, so a batch holds
    examples of similar length (less padding) while batch order stays random.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * group_window
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def shared_prefix_length(split: TokenizedSplit, minimum: int = 4) -> int:
    """Tokens every example starts with and that carry no loss (0 if fewer than `minimum`).

    Prepared data repeats one system prompt and turn header in every example; `answer_loss`
    computes that prefix once per batch. The prefix stops one token before the first label (a
    label at t is predicted from t-1) and leaves every example at least two tokens of its own.
    """
    if not split.input_ids:
        return 0
    first = split.input_ids[0]
    limit = min(len(ids) for ids in split.input_ids) - 2
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in split.input_ids):
        length += 1
    first_label = min(
        next((i for i, lab in enumerate(labels) if lab != IGNORE_INDEX), len(labels))
        for labels in split.labels
    )
    length = min(length, first_label - 1)
    return length if length >= minimum else 0


def padded_tokens(lengths: Sequence[int], multiple: int = 1) -> int:
    """Tokens a right-padded batch of examples of these lengths computes: rows x longest
    (rounded up to `multiple`)."""
    return round_up(max(lengths), multiple) * len(lengths)


def token_budget_chunks(
    indices: list[int],
    lengths: list[int],
    max_tokens: int | None,
    tokens: Callable[[Sequence[int]], int] = padded_tokens,
) -> list[list[int]]:
    """Cut a batch into consecutive pieces whose computed size (`tokens`) fits `max_tokens`.

    Losses are summed per token and divided by the whole window's label tokens, so the pieces'
    gradients add up to the batch's gradient: only peak activation memory changes. A single
    example longer than the budget still forms a piece of its own.
    """
    if max_tokens is None:
        return [indices]
    chunks: list[list[int]] = []
    current: list[int] = []
    for index in indices:
        if current and tokens([lengths[i] for i in [*current, index]]) > max_tokens:
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


def collate(
    split: TokenizedSplit, indices: list[int], pad_id: int, multiple: int = 1
) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example (rounded up to `multiple`): input_ids,
    attention_mask, labels [B, T]."""
    width = round_up(max(len(split.input_ids[i]) for i in indices), multiple)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(indices), width), dtype=torch.long)
    for row, index in enumerate(indices):
        ids = split.input_ids[index]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(split.labels[index])
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def steps_per_epoch(num_batches: int, grad_accum: int) -> int:
    return math.ceil(num_batches / grad_accum)


def collate_packed(
    split: TokenizedSplit,
    indices: list[int],
    prefix_len: int = 0,
    multiple: int = 1,
    pad_id: int = 0,
) -> dict[str, torch.Tensor]:
    """All examples in one row, without padding: [shared prefix][example 1][example 2]...

    The first `prefix_len` tokens, identical in every example (`shared_prefix_length`), appear
    once; each example contributes the rest. Returns input_ids, labels, position_ids [1, T] and
    attention_mask [1, 1, T, T] (bool, True = may attend), and segment_ids [1, T] (-1 on the
    prefix, k on example k, len(indices) on the end padding): a token sees the prefix and the
    earlier tokens of its own example, at the positions it has alone, so every example is
    computed exactly as in a padded batch (same loss and gradients) with no pad token computed.
    Each example's first own token gets no label: in a padded row nothing predicts it either.
    `multiple` > 1 ends the row with pad tokens up to a multiple of it (no labels, seen by no
    example; they see the prefix and each other, so no attention row is empty).
    """
    ids: list[int] = list(split.input_ids[indices[0]][:prefix_len])
    labels: list[int] = [IGNORE_INDEX] * prefix_len
    positions: list[int] = list(range(prefix_len))
    segments: list[int] = [-1] * prefix_len
    for number, index in enumerate(indices):
        own = split.input_ids[index][prefix_len:]
        ids += own
        labels += [IGNORE_INDEX, *split.labels[index][prefix_len + 1 :]]
        positions += range(prefix_len, prefix_len + len(own))
        segments += [number] * len(own)
    padding = round_up(len(ids), multiple) - len(ids)
    ids += [pad_id] * padding
    labels += [IGNORE_INDEX] * padding
    positions += range(padding)
    segments += [len(indices)] * padding
    segment = torch.tensor(segments)
    causal = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
    same = (segment[:, None] == segment[None, :]) | (segment[None, :] == -1)
    as_row = partial(torch.tensor, dtype=torch.long)
    return {
        "input_ids": as_row([ids]),
        "labels": as_row([labels]),
        "position_ids": as_row([positions]),
        "attention_mask": (causal & same)[None, None],
        "segment_ids": segment[None],
    }


@dataclass(frozen=True)
class Batching:
    """How micro-batches become tensors, and what one costs against `train.max_batch_tokens`.

    packed=False: right-padded rows (`collate`); `answer_loss` runs the shared prefix once
    through a KV cache (`cache_prefix_len`). packed=True: one row (`collate_packed`), the
    prefix already in it once; no padding is computed at all, unless `multiple` > 1 rounds
    lengths up (`data.pad_to_multiple_of`).
    """

    pad_id: int
    prefix_len: int = 0
    packed: bool = False
    multiple: int = 1  # data.pad_to_multiple_of: batch lengths rounded up to a multiple of it

    @property
    def cache_prefix_len(self) -> int:
        """The prefix `answer_loss` must share through its cache (packed rows hold it already)."""
        return 0 if self.packed else self.prefix_len

    def tokens(self, lengths: Sequence[int]) -> int:
        """What a piece of examples of these lengths counts against `train.max_batch_tokens`."""
        if not self.packed:
            return padded_tokens(lengths, self.multiple)
        return round_up(self.prefix_len + sum(n - self.prefix_len for n in lengths), self.multiple)

    def computed_tokens(self, lengths: Sequence[int]) -> int:
        """Tokens its forward pass computes (what activation memory scales with): the shared
        prefix once, then each row's own tokens, padded to the longest unless packed; lengths
        rounded up to `multiple`."""
        if self.packed:
            return self.tokens(lengths)
        width = round_up(max(lengths), self.multiple)
        return self.prefix_len + len(lengths) * (width - self.prefix_len)

    def collate(self, split: TokenizedSplit, indices: list[int]) -> dict[str, torch.Tensor]:
        if self.packed:
            return collate_packed(split, indices, self.prefix_len, self.multiple, self.pad_id)
        return collate(split, indices, self.pad_id, self.multiple)
