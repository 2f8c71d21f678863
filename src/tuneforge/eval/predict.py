"""Batched prediction with a causal LM: label classification, free generation, sampling.

Classification predictions are always valid labels (`eval.labels.LabelSet`), by one of two
methods:

- constrained greedy decoding (`Predictor.classify_constrained`, the fast path): every label is
  tokenized as the chat template renders an answer (label text + turn-end token, e.g.
  `<|im_end|>`) and the sequences form a token trie; at each step the logits are masked to the
  children of the row's current trie node. Cost: one prompt pass plus a step per label token.
  Confidence = product of the chosen tokens' probabilities renormalised over the allowed children.
- exact scoring (`Predictor.score_labels`): the log-probability of every label's tokens (end
  token included) given the prompt, summed over the label's tokens. The prompt runs once; all
  label continuations then run in one forward as a single packed row after its KV cache, under
  a block mask (`eval.decoding.PackedContinuations`); sliding-window models repeat the cache
  once per label instead. Confidence = softmax of the label scores.

Free generation (`Predictor.generate`): greedy or sampled decoding, stopping at the template's
turn end (`stop_token_ids`).

Efficiency:
- every prompt of a call usually starts with the same tokens (system prompt + turn header, or
  the few-shot examples); that prefix runs once per call, and each batch starts from a copy of
  its KV cache repeated over the batch (as `train.loss.answer_loss` shares it in training);
- prompts are sorted by length and batched; within a batch the per-example suffixes are padded
  on the left of the suffix ("middle padding", `eval.decoding.CachedBatch`);
- decoding uses the KV cache, and finished rows leave the batch.

Prompt tuning / prefix tuning models are decoded by recomputing whole sequences at each step
instead (`eval.decoding.RecomputedBatch`) -- slower, same results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tuneforge.errors import TuneforgeError
from tuneforge.eval.decoding import (
    CachedBatch,
    PackedContinuations,
    RecomputedBatch,
    continuation_logprobs,
    model_device,
    repeated_cache_scores,
)
from tuneforge.eval.labels import LabelSet, Messages
from tuneforge.models.architecture import is_prompt_learning, sliding_window
from tuneforge.models.tokenizer import render, stop_token_ids

MIN_SHARED_PREFIX = 4
"""A common prefix shorter than this is not worth a separate forward pass."""
EXACT_ROWS = 96
"""Exact scoring runs (examples x labels) rows at once; at most this many per forward."""


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
# the predictor
# ---------------------------------------------------------------------------------------------


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
                device = model_device(self.model)
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
                state = CachedBatch(
                    self.model, sequences, shared, prefix_cache if shared else None, self.pad_id
                )
                yield indices, state
            else:
                yield indices, RecomputedBatch(self.model, sequences, self.pad_id)

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
                scores[i] = continuation_logprobs(self.model, prompt, sequences, self.pad_id)
            return scores
        first_tokens = [seq[0] for seq in sequences]
        packed = PackedContinuations.build(sequences)
        per_batch = max(1, min(self.batch_size, self.exact_rows * 8 // max(1, packed.length)))
        if sliding_window(self.model) is not None:
            per_batch = max(1, min(self.batch_size, self.exact_rows // n_labels))
        for indices, batch in self._batches(prompts, packed.length + 1, per_batch):
            assert isinstance(batch, CachedBatch)
            first = torch.log_softmax(batch.logits, dim=-1)[:, first_tokens]  # [B, N]
            total = first.double()
            if packed.length and sliding_window(self.model) is None:
                total = total + packed.score(self.model, batch).double()
            elif packed.length:
                # Sliding-window layers keep a cache of another length than the global
                # ones, so one block mask cannot serve both: repeat the cache per label.
                total = total + repeated_cache_scores(self.model, batch, sequences, self.pad_id)
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
        device = model_device(self.model)
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
