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
  once per label instead. Confidence = softmax of the label scores. Classifying this way
  (`classify_exact`) scores only the labels that can still win: a label's score is at most its
  first token's log-probability, so after the labels under the likeliest first token, only
  first tokens at least as likely as the best score so far need their labels scored (same
  answers as scoring all; on Banking77 5.4x faster than scoring all 77 labels).

Free generation (`Predictor.generate`): greedy or sampled decoding, stopping at the template's
turn end (`stop_token_ids`).

Efficiency:
- every prompt of a call usually starts with the same tokens (system prompt + turn header, or
  the few-shot examples); that prefix runs once per call, and each batch starts from a copy of
  its KV cache repeated over the batch (as `train.loss.answer_loss` shares it in training);
- prompts are sorted by length and batched; within a batch the per-example suffixes are padded
  on the left of the suffix ("middle padding", `eval.decoding.CachedBatch`);
- decoding uses the KV cache, and finished rows leave the batch; in constrained decoding the
  rows still undecided after the prompt pass of several batches decode together
  (`eval.decoding.CachedBatch.concatenate`), since a decode step costs mostly per call.

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
    row_view,
)
from tuneforge.eval.labels import LabelSet, Messages
from tuneforge.models.architecture import is_prompt_learning, sliding_window
from tuneforge.models.tokenizer import render, stop_token_ids

MIN_SHARED_PREFIX = 4
"""A common prefix shorter than this is not worth a separate forward pass."""
EXACT_ROWS = 96
"""Exact scoring runs (examples x labels) rows at once; at most this many per forward."""
DECODE_POOL_BATCHES = 4
"""On CPU, constrained decoding pools the rows left after the prompt pass of this many batches."""


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
    `decode_pool`: rows whose constrained-decoding steps run together (default: 4 batches on
    CPU, none elsewhere; 0 decodes batch by batch).
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
        decode_pool: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise TuneforgeError(f"batch size must be at least 1 (got {batch_size})")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.exact_rows = exact_rows
        if decode_pool is None:  # held caches cost accelerator memory: pool on CPU only
            on_cpu = model_device(model).type == "cpu"
            decode_pool = DECODE_POOL_BATCHES * batch_size if on_cpu else 0
        self.decode_pool = decode_pool
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
                state = CachedBatch.prefill(
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
        """Greedy decoding restricted to the label trie: always a valid label.

        After its prompt pass most rows of a batch still need a step or two (labels that share
        their first token). Those steps are pooled: rows left over from several prompt batches
        decode together once `decode_pool` rows wait, so each decode forward (whose cost is
        mostly per call at these sizes) serves up to `decode_pool` rows instead of one batch.
        """
        trie = label_set.trie()
        results: list[Prediction | None] = [None] * len(prompts)
        waiting: list[_TrieDecode] = []
        for indices, batch in self._batches(prompts, label_set.longest):
            decode = _TrieDecode(batch, [_TrieRow(i, trie) for i in indices])
            if not decode.step(results):
                continue
            if self.decode_pool <= len(indices) or not CachedBatch.has_plain_cache(batch):
                decode.run(results)
                continue
            waiting.append(decode)
            if sum(len(d.rows) for d in waiting) >= self.decode_pool:
                _TrieDecode.concatenate(waiting).run(results)
                waiting = []
        if waiting:
            _TrieDecode.concatenate(waiting).run(results)
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
        """The label with the highest exact score (`score_labels`), each prompt.

        With a plain KV cache only the labels that can still win are scored (`_best_labels`);
        otherwise every label is, and the confidence is the softmax of the label scores.
        """
        if self.uses_cache and sliding_window(self.model) is None:
            return self._best_labels(prompts, label_set)
        scores = self.score_labels(prompts, label_set)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = scores.argmax(axis=1)
        return [Prediction(int(b), float(probs[i, b])) for i, b in enumerate(best)]

    @torch.inference_mode()
    def _best_labels(self, prompts: list[list[int]], label_set: LabelSet) -> list[Prediction]:
        """Exact scoring's argmax without scoring every label (branch and bound).

        A label's score is log p(first token) + log p(rest | first) <= log p(first token). So:
        score the labels under each prompt's likeliest first token, then only the labels whose
        first token is at least as likely as the best score so far; no other label can win.
        On Banking77 (77 labels, many sharing a first token) that is a fraction of the labels.

        Confidence: the label's probability over the scored labels' plus, for each first token
        left unscored, that token's whole probability (an upper bound of its labels' mass), so
        at most the full softmax confidence, equal when nothing likely was pruned.
        """
        sequences = label_set.sequences
        first_tokens = [seq[0] for seq in sequences]
        groups: dict[int, list[int]] = {}
        for n, token in enumerate(first_tokens):
            groups.setdefault(token, []).append(n)
        heads = torch.tensor([members[0] for members in groups.values()])  # a label per group
        results: list[Prediction] = [Prediction(0, 0.0)] * len(prompts)
        for indices, batch in self._batches(prompts, label_set.longest + 1):
            first = torch.log_softmax(batch.logits, dim=-1)[:, first_tokens].double()  # [B, N]
            totals = torch.full_like(first, -math.inf)
            if not CachedBatch.has_plain_cache(batch):  # no row views: score every label
                packed = PackedContinuations.build(sequences)
                totals = first + packed.score(self.model, batch).double()
            else:
                leading = first.argmax(dim=1).tolist()
                leading_groups = [groups[first_tokens[n]] for n in leading]
                self._score_subsets(batch, sequences, leading_groups, first, totals)
                best = totals.max(dim=1).values
                contenders = (totals == -math.inf) & (first >= best[:, None])
                if contenders.any():
                    subsets = [row.nonzero().flatten().tolist() for row in contenders]
                    self._score_subsets(batch, sequences, subsets, first, totals)
            unscored = totals[:, heads] == -math.inf  # [B, groups]
            mass = torch.cat([totals, first[:, heads].masked_fill(~unscored, -math.inf)], dim=1)
            labels = totals.argmax(dim=1)
            best = totals.gather(1, labels[:, None]).squeeze(1)
            confidence = torch.exp(best - torch.logsumexp(mass, dim=1)).tolist()
            for original, label, share in zip(indices, labels.tolist(), confidence, strict=True):
                results[original] = Prediction(label, share)
        return results

    def _score_subsets(
        self,
        batch: CachedBatch,
        sequences: list[list[int]],
        subsets: list[list[int]],
        first: torch.Tensor,
        totals: torch.Tensor,
    ) -> None:
        """totals[row, label] = exact score for each label in subsets[row] ([B, N], in place).

        Rows go through in slices of at most `exact_rows * 8` packed positions, each a view of
        the batch's cache (left unchanged, to be scored again).
        """
        widths = [sum(len(sequences[n]) - 1 for n in subset) for subset in subsets]
        budget = self.exact_rows * 8
        start = 0
        while start < len(subsets):
            stop, widest = start + 1, widths[start]
            while stop < len(subsets) and (stop - start + 1) * max(widest, widths[stop]) <= budget:
                widest = max(widest, widths[stop])
                stop += 1
            chunk = subsets[start:stop]
            if any(chunk):
                packed = PackedContinuations.build(sequences, chunk)
                rest = packed.score(self.model, row_view(batch, start, stop)).double()
                chosen = torch.zeros_like(rest, dtype=torch.bool)
                for row, subset in enumerate(chunk):
                    chosen[row, subset] = True
                scored = first[start:stop] + rest
                totals[start:stop] = torch.where(chosen, scored, totals[start:stop])
            start = stop

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


@dataclass
class _TrieRow:
    """One row decoding down the label trie: its prompt's index, trie node, confidence so far."""

    original: int
    node: Any
    confidence: float = 1.0


class _TrieDecode:
    """Rows of a batch state decoding down the label trie; `tokens`: chosen, not yet fed."""

    def __init__(self, batch: Any, rows: list[_TrieRow], tokens: list[int] | None = None) -> None:
        self.batch = batch
        self.rows = rows
        self.tokens = tokens or []

    @classmethod
    def concatenate(cls, decodes: list[_TrieDecode]) -> _TrieDecode:
        batch = CachedBatch.concatenate([d.batch for d in decodes])
        rows = [row for d in decodes for row in d.rows]
        return cls(batch, rows, [t for d in decodes for t in d.tokens])

    def step(self, results: list[Prediction | None]) -> bool:
        """Choose each row's next token from the batch's logits; finished rows go to `results`.

        Returns whether rows remain (they keep their chosen token in `tokens`).
        """
        logits = self.batch.logits
        chosen, still = [], []
        for n, row in enumerate(self.rows):
            allowed = torch.tensor(list(row.node.children), device=logits.device)
            probs = torch.softmax(logits[n, allowed], dim=-1)
            best = int(torch.argmax(probs))
            token = int(allowed[best])
            row.confidence *= float(probs[best])
            row.node = row.node.children[token]
            if row.node.only is None:
                still.append(n)
                chosen.append(token)
            else:
                results[row.original] = Prediction(row.node.only, row.confidence)
        if still and len(still) < len(self.rows):
            self.batch.keep(torch.tensor(still, device=logits.device))
        self.rows = [self.rows[n] for n in still]
        self.tokens = chosen
        return bool(self.rows)

    def run(self, results: list[Prediction | None]) -> None:
        """Feed the chosen tokens and step until every row has reached its label."""
        while self.rows:
            self.batch.advance(torch.tensor(self.tokens, device=self.batch.logits.device))
            self.step(results)


def resolve_scoring(scoring: str, n_labels: int) -> str:
    if scoring not in ("auto", "exact", "constrained"):
        raise TuneforgeError(f"--scoring {scoring!r}: expected auto, exact or constrained")
    if scoring == "auto":
        return "exact" if n_labels <= 20 else "constrained"
    return scoring
