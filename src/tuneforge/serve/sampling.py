"""Per-request sampling and stopping inside one batched `generate` call.

transformers' `generate` takes one temperature/top_p/max_new_tokens for the whole batch and
samples from the global RNG. A batch here mixes requests with their own parameters, so:

- `RowSampler` (a LogitsProcessor) samples each sampled row itself, with the row's temperature,
  top_p and its own seeded `torch.Generator`, and leaves only the chosen token finite; `generate`
  then runs greedy (argmax), which picks exactly that token. Greedy rows pass through untouched.
  A seeded request therefore samples the same tokens whatever else shares its batch.
- `RowTracker` (a StoppingCriteria, called once per step after the new token is appended) ends
  each row on its own terms -- a turn-end token, one of its stop strings, its own max_tokens, or
  a client that went away -- and turns the row's tokens into text as they come, holding back
  text that might still become a stop string (or half a UTF-8 character), so that streamed
  deltas never have to be taken back.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from tuneforge.eval.predict import top_p_filter
from tuneforge.serve.jobs import Delta, Job, SamplingParams


class RowSampler(LogitsProcessor):
    """Samples each non-greedy row with its own temperature, top_p and seed (see module doc)."""

    def __init__(
        self, params: Sequence[SamplingParams], device: torch.device, skip: Any = None
    ) -> None:
        self._rows = []
        for row, p in enumerate(params):
            if p.greedy:
                continue
            seed = p.seed if p.seed is not None else secrets.randbits(63)
            generator = torch.Generator(device=device).manual_seed(seed)
            self._rows.append((row, p, generator))
        self._skip = skip  # rows already finished need no sampling

    @property
    def active(self) -> bool:
        return bool(self._rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, p, generator in self._rows:
            if self._skip is not None and self._skip(row):
                continue
            logits = scores[row] / p.temperature
            if p.top_p < 1.0:
                logits = top_p_filter(logits, p.top_p)
            probs = torch.softmax(logits, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        return scores


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of `text` that could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class RowText:
    """One row's generated tokens -> text, with its stop strings and token limit."""

    def __init__(self, tokenizer: Any, params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.stops = params.stop
        self.max_tokens = params.max_tokens
        self.tokens: list[int] = []
        self.generated = 0
        self.text = ""
        self.sent = ""
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def finish(self, reason: str) -> None:
        self.finish_reason = reason

    def add(self, token: int, is_stop_token: bool) -> str:
        """Take one generated token; returns newly safe text (may be empty)."""
        self.generated += 1
        if is_stop_token:
            self.finish("stop")
            return ""
        self.tokens.append(token)
        full = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((i for i in (full.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = full[:cut]
            self.finish("stop")
            return ""
        self.text = full
        if self.generated >= self.max_tokens:
            self.finish("length")
            return ""
        safe = len(full) - stop_holdback(full, self.stops)
        safe = min(safe, len(full.rstrip("\ufffd")))  # half a multi-byte character so far
        if safe <= len(self.sent) or not full.startswith(self.sent):
            return ""
        delta = full[len(self.sent) : safe]
        self.sent = full[:safe]
        return delta


class RowTracker(StoppingCriteria):
    """Per-row stopping for a batch of jobs; streams each row's text deltas (see module doc)."""

    def __init__(self, jobs: Sequence[Job], stop_ids: set[int]) -> None:
        self.jobs = list(jobs)
        self.rows = [RowText(job.target.tokenizer, job.params) for job in jobs]
        self.stop_ids = stop_ids

    def is_finished(self, row: int) -> bool:
        return self.rows[row].finished

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        for job, row, token in zip(self.jobs, self.rows, tokens, strict=True):
            if row.finished:
                continue
            if job.cancelled:
                row.finish("cancelled")
                continue
            delta = row.add(token, token in self.stop_ids)
            if delta and job.stream:
                job.events.push(Delta(delta))
        done = [row.finished for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
