"""Running one model variant: its prompts, predictions, confidences, time and output variation.

Shared by `tuneforge eval` (every LM variant, :mod:`tuneforge.eval.run`) and the before-training
prompting check (:mod:`tuneforge.eval.prompting`), so both build prompts and score labels alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.errors import TuneforgeError
from tuneforge.eval import baselines as bl
from tuneforge.eval.inputs import Messages, Row

VARIATION_EXAMPLES = 50
VARIATION_SEEDS = (0, 1, 2)
GENERATION_TOKEN_CAP = 512
PROMPT_TOKENS_MAX = 256


@dataclass
class Variant:
    name: str
    pred: list[str]
    confidence: list[float | None]
    seconds: float
    prompt_tokens: float | None = None
    free: list[str] | None = None
    prompts: list[list[int]] | None = None
    """Encoded prompts (LM variants), for the output-variation check."""
    variation: float | None = None
    free_seconds: float | None = None
    """Time of the free generations (classification), reported apart from `seconds`."""


def conversations_for(
    kind: str,
    rows: Sequence[Row],
    labels: Sequence[str] | None,
    train_rows: Sequence[Row] = (),
    shots: int = 0,
    seed: int = 0,
) -> list[Messages]:
    """The prompts variant `kind` is shown for the test `rows` (their last turn, the answer, cut).

    `tuned`: the prompts as trained; `zero`, `fewshot`, `rag`: the baselines of
    :mod:`tuneforge.eval.baselines`, with `shots` examples from `train_rows` (`fewshot` picks
    them with `seed`).
    """
    prompts = [row["messages"][:-1] for row in rows]
    if kind == "tuned":
        return prompts
    if kind == "zero":
        return [bl.zero_shot(p, labels) for p in prompts]
    if kind == "fewshot":
        chosen = bl.stratified_shots(train_rows, shots, seed=seed)
        return [bl.with_examples(p, chosen, labels) for p in prompts]
    if kind == "rag":
        nearest = bl.retrieved_shots(train_rows, rows, shots)
        return [bl.with_examples(p, near, labels) for p, near in zip(prompts, nearest, strict=True)]
    raise TuneforgeError(f"internal: unknown prompt kind {kind!r}")


class Runner:
    """Runs LM variants for one task; holds the label set and the decoding budgets."""

    def __init__(
        self,
        tokenizer: Any,
        labels: Sequence[str] | None,
        context: Messages,
        references: Sequence[str],
        scoring: str = "auto",
        batch_size: int = 16,
    ) -> None:
        """`labels`: the label set of a classification task, None for generation.

        `context` is a prompt conversation the labels are tokenized after (any test prompt;
        see `LabelSet.build`); `references` are the reference answers, whose length sets the
        generation budget of a generation task.
        """
        from tuneforge.eval.labels import LabelSet
        from tuneforge.eval.predict import resolve_scoring

        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.label_set = None
        self.scoring = None
        if labels is not None:
            self.label_set = LabelSet.build(tokenizer, labels, context)
            self.scoring = resolve_scoring(scoring, len(labels))
            self.max_new = self.label_set.longest + 4
        else:
            longest = max(
                len(tokenizer(ref, add_special_tokens=False)["input_ids"]) for ref in references
            )
            self.max_new = min(GENERATION_TOKEN_CAP, max(8, math.ceil(1.5 * (longest + 1))))

    def predictor(self, model: Any) -> Any:
        from tuneforge.eval.predict import Predictor

        return Predictor(model, self.tokenizer, batch_size=self.batch_size)

    def run(
        self,
        name: str,
        model: Any,
        conversations: list[Messages],
        *,
        free_generation: bool = True,
    ) -> Variant:
        """Predictions for `conversations`; `seconds` times the predictions only.

        Classification scores the label set; with `free_generation` the model also answers
        freely (`Variant.free`), for the invalid-output rate.
        """
        predictor = self.predictor(model)
        prompts = predictor.encode(conversations)
        free: list[str] | None = None
        free_seconds: float | None = None  # classification's free answers, timed apart
        started = time.perf_counter()
        if self.label_set is not None:
            assert self.scoring is not None
            found = predictor.classify(prompts, self.label_set, self.scoring)
            labels = self.label_set.labels
            pred = [labels[p.label] for p in found]
            confidence: list[float | None] = [p.confidence for p in found]
            seconds = time.perf_counter() - started
            if free_generation:
                free = [g.text for g in predictor.generate(prompts, self.max_new)]
                free_seconds = time.perf_counter() - started - seconds
        else:
            outputs = predictor.generate(prompts, self.max_new)
            pred = [g.text for g in outputs]
            confidence = [g.confidence for g in outputs]
            seconds = time.perf_counter() - started
        return Variant(
            name,
            pred,
            confidence,
            seconds,
            prompt_tokens=float(np.mean([len(p) for p in prompts])),
            free=free,
            prompts=prompts,
            free_seconds=free_seconds,
        )

    def variation(self, model: Any, variant: Variant) -> float | None:
        """Share of (up to 50) examples whose sampled answer differs across 3 seeds."""
        from tuneforge.eval.metrics import normalize_text
        from tuneforge.eval.predict import Sampling

        if not variant.prompts:
            return None
        prompts = variant.prompts[:VARIATION_EXAMPLES]
        predictor = self.predictor(model)
        runs = [
            [
                normalize_text(g.text)
                for g in predictor.generate(prompts, self.max_new, sampling=Sampling(), seed=seed)
            ]
            for seed in VARIATION_SEEDS
        ]
        differs = [len({run[i] for run in runs}) > 1 for i in range(len(prompts))]
        return float(np.mean(differs))

    def answer_prompts(self, model: Any, conversations: list[Messages]) -> list[str]:
        """Free answers to `conversations` (the side-by-side prompts of the report)."""
        predictor = self.predictor(model)
        budget = min(PROMPT_TOKENS_MAX, max(64, self.max_new))
        return [g.text for g in predictor.generate(predictor.encode(conversations), budget)]
