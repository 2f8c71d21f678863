"""Batched prediction with a causal LM: label classification, free generation, sampling.

Classification predictions are always valid labels, by one of two methods:

- constrained greedy decoding (`Predictor.classify_constrained`, the fast path): every label is
  tokenized as the chat template renders an answer (label text + turn-end token, e.g.
  `<|im_end|>`) and the sequences form a token trie; at each step the logits are masked to the
  children of the row's current trie node. Cost: one prompt pass plus a step per label token.
  Confidence = product of the chosen tokens' probabilities renormalised over the allowed children.
- exact scoring (`Predictor.score_labels`): the log-probability of every label's tokens (end
  token included) given the prompt, summed over the label's tokens. The prompt runs once; its
  KV cache is repeated across the labels (`DynamicCache.batch_repeat_interleave`) and all label
  continuations run in one forward. Confidence = softmax of the label scores.

Free generation (`Predictor.generate`): greedy or sampled decoding, stopping at the template's
turn end (`stop_token_ids`).

Efficiency:
- every prompt of a call usually starts with the same tokens (system prompt + turn header, or
  the few-shot examples); that prefix runs once per call, and each batch starts from a copy of
  its KV cache repeated over the batch (as `train.loss.answer_loss` shares it in training);
- prompts are sorted by length and batched; within a batch the per-example suffixes are padded
  on the left of the suffix ("middle padding": [prefix][pad][suffix]), so every row's last
  prompt token sits in the last column, with explicit position ids that skip the padding;
- decoding uses the KV cache, and finished rows leave the batch (`batch_select_indices`).

Prompt tuning / prefix tuning feed virtual tokens into every forward call, which a hand-fed KV
cache would bypass; for those models the predictor recomputes whole right-padded sequences at
each step instead (exactly as training computes them) -- slower, same results.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from tuneforge.data.format import IGNORE_INDEX, tokenize_example
from tuneforge.errors import TuneforgeError
from tuneforge.models.tokenizer import render, stop_token_ids
from tuneforge.train.loss import virtual_token_offset

Messages = list[dict[str, str]]

MIN_SHARED_PREFIX = 4
"""A common prefix shorter than this is not worth a separate forward pass."""
EXACT_ROWS = 96
"""Exact scoring runs (examples x labels) rows at once; at most this many per forward."""


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    label: int | None = None
    only: int | None = None
    """The one label below this node, when only one is left: decoding can stop here, since
    every further choice has a single allowed child (renormalised probability 1)."""

    def settle(self) -> set[int]:
        """Fill `only` in this subtree; return the labels below this node."""
        below = {self.label} if self.label is not None else set()
        for child in self.children.values():
            below |= child.settle()
        self.only = next(iter(below)) if len(below) == 1 else None
        return below


@dataclass(frozen=True)
class LabelSet:
    """Labels and their answer token sequences (label text + the template's turn-end token)."""

    labels: list[str]
    sequences: list[list[int]]

    @classmethod
    def build(cls, tokenizer: Any, labels: Sequence[str], context: Messages) -> LabelSet:
        """Tokenize each label exactly as training tokenized an answer after `context`.

        `context` is any prompt conversation (system/user turns); the answer tokens are those
        `tokenize_example` labels for an assistant turn holding the label.
        """
        sequences = []
        for label in labels:
            tokens = tokenize_example(
                tokenizer, [*context, {"role": "assistant", "content": label}]
            )
            # Only the last assistant turn: a few-shot context holds earlier answers that
            # training would also label.
            answer: list[int] = []
            for tok, lab in zip(reversed(tokens.input_ids), reversed(tokens.labels), strict=True):
                if lab == IGNORE_INDEX:
                    if answer:
                        break
                    continue
                answer.append(tok)
            answer.reverse()
            if not answer:
                raise TuneforgeError(f"label {label!r}: the chat template renders no answer tokens")
            sequences.append(answer)
        if len({tuple(seq) for seq in sequences}) != len(sequences):
            raise TuneforgeError("two labels tokenize to the same answer tokens")
        return cls(list(labels), sequences)

    @property
    def longest(self) -> int:
        return max(len(seq) for seq in self.sequences)

    def trie(self) -> _TrieNode:
        root = _TrieNode()
        for index, seq in enumerate(self.sequences):
            node = root
            for token in seq:
                node = node.children.setdefault(token, _TrieNode())
            node.label = index
        root.settle()
        return root


@dataclass(frozen=True)
class Prediction:
    label: int
    """Index into `LabelSet.labels`."""
    confidence: float


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int]
    confidence: float
    """Geometric mean of the chosen tokens' probabilities (stop token included if reached)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    """Token ids of the prompt the model answers: the conversation + the generation prompt."""
    text = render(tokenizer, messages, generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def common_prefix_length(
    sequences: Sequence[Sequence[int]], minimum: int = MIN_SHARED_PREFIX
) -> int:
    """Tokens all sequences start with, leaving each at least one token of its own (0 if < minimum)."""
    if not sequences:
        return 0
    first = sequences[0]
    limit = min(len(seq) for seq in sequences) - 1
    length = 0
    while length < limit and all(seq[length] == first[length] for seq in sequences):
        length += 1
    return length if length >= minimum else 0


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first), in chunks of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def is_prompt_learning(model: Any) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def sliding_window(model: Any) -> int | None:
    """The attention window of a model with sliding-window layers (Gemma 3, Mistral), else None.

    Such layers see the last `window` *columns* of the cache, padding included, so the middle
    padding of a shared prefix ([prefix][pad][suffix]) would hide real tokens that an unpadded
    sequence still sees; left padding does not (pads precede every real token). The predictor
    shares a prefix only for batches whose whole span fits in the window.
    """
    config = getattr(model, "config", None)
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    return window


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model always has parameters
        return torch.device("cpu")


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits outside the smallest set of tokens with probability >= top_p set to -inf."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
    remove[..., 0] = False
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


# ---------------------------------------------------------------------------------------------
# batch state: a KV cache with middle padding, or whole sequences recomputed
# ---------------------------------------------------------------------------------------------


class _CachedBatch:
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
        device = _model_device(model)
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


class _RecomputedBatch:
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


def _right_padded(sequences: list[list[int]], pad_id: int, device: torch.device):
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def _last_logits(model: Any, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """Next-token logits after each whole sequence [rows, V], computed as training does."""
    device = _model_device(model)
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


# ---------------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------------


@dataclass
class _PackedContinuations:
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
    def build(cls, sequences: Sequence[Sequence[int]]) -> _PackedContinuations:
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

    def score(self, model: Any, batch: _CachedBatch) -> torch.Tensor:
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


def _repeated_cache_scores(
    model: Any, batch: _CachedBatch, sequences: Sequence[Sequence[int]], pad_id: int
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


class Predictor:
    """Prediction with one model + tokenizer; see the module docstring.

    `share_prefix=False` disables the shared-prefix KV cache (tests check it changes nothing).
    The model must not change (e.g. its adapter switched on/off) during one method call.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 16,
        share_prefix: bool = True,
        exact_rows: int = EXACT_ROWS,
    ) -> None:
        if batch_size < 1:
            raise TuneforgeError(f"batch size must be at least 1 (got {batch_size})")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.exact_rows = exact_rows
        self.pad_id = int(tokenizer.pad_token_id)
        self.stop_ids = set(stop_token_ids(tokenizer))

    # -- prompts ---------------------------------------------------------------------------

    def encode(self, conversations: Sequence[Messages]) -> list[list[int]]:
        return [encode_prompt(self.tokenizer, messages) for messages in conversations]

    @property
    def uses_cache(self) -> bool:
        return not is_prompt_learning(self.model)

    def _batches(self, prompts: list[list[int]], extra: int, batch_size: int | None = None):
        """Yield (indices, batch state) over length-sorted batches, the prefix computed once.

        `extra`: tokens the batch will grow by (new tokens, label tokens); with sliding-window
        attention, a batch whose padded span would not fit the window falls back to plain
        left padding (see `sliding_window`).
        """
        prefix_len = 0
        prefix_cache = None
        if self.share_prefix and self.uses_cache:
            prefix_len = common_prefix_length(prompts)
            if prefix_len:
                device = _model_device(self.model)
                prefix = torch.tensor([prompts[0][:prefix_len]], device=device)
                out = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
                prefix_cache = out.past_key_values
        for indices in length_batches([len(p) for p in prompts], batch_size or self.batch_size):
            sequences = [prompts[i] for i in indices]
            if self.uses_cache:
                shared = prefix_len
                window = sliding_window(self.model)
                if window is not None and shared:
                    span = max(len(seq) for seq in sequences) + extra
                    if span > window - 1:
                        shared = 0  # middle padding would push real tokens out of the window
                state = _CachedBatch(
                    self.model, sequences, shared, prefix_cache if shared else None, self.pad_id
                )
                yield indices, state
            else:
                yield indices, _RecomputedBatch(self.model, sequences, self.pad_id)

    # -- classification ----------------------------------------------------------------------

    @torch.inference_mode()
    def classify_constrained(
        self, prompts: list[list[int]], label_set: LabelSet
    ) -> list[Prediction]:
        """Greedy decoding restricted to the label trie: always a valid label."""
        trie = label_set.trie()
        results: list[Prediction | None] = [None] * len(prompts)
        for indices, batch in self._batches(prompts, label_set.longest):
            nodes = [trie] * len(indices)
            confidence = [1.0] * len(indices)
            active = list(range(len(indices)))  # batch rows still decoding -> original rows
            logits = batch.logits
            while True:
                chosen = []
                for row, original in enumerate(active):
                    node = nodes[original]
                    allowed = torch.tensor(list(node.children), device=logits.device)
                    probs = torch.softmax(logits[row, allowed], dim=-1)
                    best = int(torch.argmax(probs))
                    token = int(allowed[best])
                    confidence[original] *= float(probs[best])
                    nodes[original] = node.children[token]
                    chosen.append(token)
                still = [row for row, original in enumerate(active) if nodes[original].only is None]
                if not still:
                    break
                if len(still) < len(active):
                    keep = torch.tensor(still, device=logits.device)
                    batch.keep(keep)
                    chosen = [chosen[row] for row in still]
                    active = [active[row] for row in still]
                logits = batch.advance(torch.tensor(chosen, device=logits.device))
            for row, original in enumerate(indices):
                label = nodes[row].only
                assert label is not None
                results[original] = Prediction(label, confidence[row])
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def score_labels(self, prompts: list[list[int]], label_set: LabelSet) -> np.ndarray:
        """[examples, labels]: sum of log p(label tokens incl. turn end | prompt).

        Each example's prompt is computed once; all its label continuations then go through
        one forward as a single packed row after the prompt's cache, each continuation
        attending to the prompt and to its own earlier tokens only (a block mask). Repeating
        the cache once per label instead copies the whole prompt cache N times, which
        dominated few-shot scoring (long prompts).
        """
        sequences = label_set.sequences
        n_labels = len(sequences)
        scores = np.zeros((len(prompts), n_labels), dtype=np.float64)
        if not self.uses_cache:
            for i, prompt in enumerate(prompts):
                scores[i] = _continuation_logprobs(self.model, prompt, sequences, self.pad_id)
            return scores
        first_tokens = [seq[0] for seq in sequences]
        packed = _PackedContinuations.build(sequences)
        per_batch = max(1, min(self.batch_size, self.exact_rows * 8 // max(1, packed.length)))
        if sliding_window(self.model) is not None:
            per_batch = max(1, min(self.batch_size, self.exact_rows // n_labels))
        for indices, batch in self._batches(prompts, packed.length + 1, per_batch):
            assert isinstance(batch, _CachedBatch)
            first = torch.log_softmax(batch.logits, dim=-1)[:, first_tokens]  # [B, N]
            total = first.double()
            if packed.length and sliding_window(self.model) is None:
                total = total + packed.score(self.model, batch).double()
            elif packed.length:
                # Sliding-window layers keep a cache of another length than the global
                # ones, so one block mask cannot serve both: repeat the cache per label.
                total = total + _repeated_cache_scores(self.model, batch, sequences, self.pad_id)
            scores[indices] = total.cpu().numpy()
        return scores

    def classify_exact(self, prompts: list[list[int]], label_set: LabelSet) -> list[Prediction]:
        scores = self.score_labels(prompts, label_set)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = scores.argmax(axis=1)
        return [Prediction(int(b), float(probs[i, b])) for i, b in enumerate(best)]

    def classify(
        self, prompts: list[list[int]], label_set: LabelSet, scoring: str = "auto"
    ) -> list[Prediction]:
        """`auto`: exact scoring for up to 20 labels, constrained decoding above."""
        method = resolve_scoring(scoring, len(label_set.labels))
        if method == "exact":
            return self.classify_exact(prompts, label_set)
        return self.classify_constrained(prompts, label_set)

    # -- free generation -------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        sampling: Sampling | None = None,
        seed: int = 0,
    ) -> list[Generation]:
        """Greedy (or sampled) continuation of each prompt, stopping at a turn-end token."""
        results: list[Generation | None] = [None] * len(prompts)
        device = _model_device(self.model)
        generator = None
        if sampling is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        for indices, batch in self._batches(prompts, max_new_tokens):
            outputs: list[list[int]] = [[] for _ in indices]
            logprob = [0.0] * len(indices)
            active = list(range(len(indices)))
            logits = batch.logits
            for step in range(max_new_tokens):
                if sampling is None:
                    tokens = torch.argmax(logits, dim=-1)
                else:
                    scaled = top_p_filter(logits / sampling.temperature, sampling.top_p)
                    probs = torch.softmax(scaled, dim=-1)
                    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                chosen = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
                token_list, chosen_list = tokens.tolist(), chosen.tolist()
                still = []
                for row, original in enumerate(active):
                    token = token_list[row]
                    logprob[original] += chosen_list[row]
                    outputs[original].append(token)
                    if token not in self.stop_ids:
                        still.append(row)
                if not still or step == max_new_tokens - 1:
                    break
                if len(still) < len(active):
                    keep = torch.tensor(still, device=device)
                    batch.keep(keep)
                    tokens = tokens[keep]
                    active = [active[row] for row in still]
                logits = batch.advance(tokens)
            for row, original in enumerate(indices):
                ids = outputs[row]
                content = ids[:-1] if ids and ids[-1] in self.stop_ids else ids
                text = self.tokenizer.decode(content, skip_special_tokens=True).strip()
                confidence = math.exp(logprob[row] / max(len(ids), 1))
                results[original] = Generation(text, ids, confidence)
        return [r for r in results if r is not None]


def resolve_scoring(scoring: str, n_labels: int) -> str:
    if scoring not in ("auto", "exact", "constrained"):
        raise TuneforgeError(f"--scoring {scoring!r}: expected auto, exact or constrained")
    if scoring == "auto":
        return "exact" if n_labels <= 20 else "constrained"
    return scoring


def _continuation_logprobs(
    model: Any, prompt: list[int], continuations: list[list[int]], pad_id: int
) -> np.ndarray:
    """Sum log p(continuation | prompt) per continuation, by whole-sequence forwards.

    The reference computation (no cache); used for prompt/prefix-tuned models.
    """
    device = _model_device(model)
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
