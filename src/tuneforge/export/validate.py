"""Round-trip validation: does the exported model behave like the model it came from?

The reference is the run as trained (the unmerged adapter on its base, 4-bit for QLoRA). On a
bounded slice of the held-out set, both models produce:
  * predictions, exactly as `tuneforge eval` makes them (`eval.predict.Predictor`): the label
    for a classification run (exact label scoring / constrained decoding), the greedy answer
    for a generation run; `agreement` is the share of rows where the two predictions are equal;
  * teacher-forced next-token logits at the reference answer's positions (the tokens training
    took the loss on, up to MAX_POSITIONS per row): `token_agreement` is the share of positions
    with the same argmax, `max_logit_diff` the largest absolute logit difference anywhere in
    the vocabulary there.
Both models see the same token ids (the run's tokenizer). A GGUF carries its own tokenizer and
chat template, so for GGUF exports we also check that the tokenizer transformers rebuilds from
the file encodes every validation conversation to the same ids, and that the template is equal.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tuneforge.errors import TuneforgeError

Row = dict[str, Any]
MAX_POSITIONS = 16
"""Answer positions per row whose logits are compared (bounds memory for long answers)."""
GENERATION_CAP = 128
VALIDATION_EXIT_CODE = 3


class ValidationFailed(TuneforgeError):
    """The export does not behave like the trained model (exit code 3, not 2: not bad input)."""

    exit_code = VALIDATION_EXIT_CODE


@dataclass
class Reference:
    """What the trained model did on the validation rows (computed once per export)."""

    rows: list[Row]
    sequences: list[list[int]]
    """prompt + reference answer (+ turn end), as training tokenized them."""
    positions: list[list[int]]
    """Per row: sequence positions whose logits predict an answer token."""
    logits: list[torch.Tensor]
    """Per row: [len(positions), vocab] float32 logits of the trained model."""
    predictions: list[str]
    seconds: float


@dataclass
class Agreement:
    rows: int
    agreement: float
    token_agreement: float
    max_logit_diff: float
    mean_logit_diff: float
    min_agreement: float
    passed: bool
    seconds: float
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    trained_accuracy: float | None = None
    """Share of rows the trained model gets right (label, or exact answer): context for how
    much a disagreement costs -- quantization can move predictions without losing accuracy."""
    export_accuracy: float | None = None
    tokenizer_agreement: float | None = None
    chat_template_equal: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"agreement {100 * self.agreement:.1f} % of {self.rows} rows",
            f"token agreement {100 * self.token_agreement:.1f} %",
            f"max |Δlogit| {self.max_logit_diff:.2e}",
        ]
        if self.trained_accuracy is not None and self.export_accuracy is not None:
            parts.append(
                f"accuracy {100 * self.trained_accuracy:.1f} % trained, "
                f"{100 * self.export_accuracy:.1f} % exported"
            )
        if self.tokenizer_agreement is not None:
            parts.append(f"tokenizer agreement {100 * self.tokenizer_agreement:.1f} %")
        if self.chat_template_equal is not None:
            parts.append("template equal" if self.chat_template_equal else "TEMPLATE DIFFERS")
        return ", ".join(parts)


def read_rows(path: Any, limit: int) -> list[Row]:
    """Up to `limit` conversations of a `prepare` JSONL that end with an assistant answer."""
    from pathlib import Path

    from tuneforge.train.data import read_split

    path = Path(path)
    if not path.is_file():
        raise TuneforgeError(f"--data {path}: no such file")
    if limit < 1:
        raise TuneforgeError(f"--validate-rows must be at least 1 (got {limit})")
    rows = read_split(path)[:limit]  # checked: each ends with the assistant's answer
    if not rows:
        raise TuneforgeError(f"--data {path}: no examples in the file")
    return rows


def _sequences(tokenizer: Any, rows: list[Row]) -> tuple[list[list[int]], list[list[int]]]:
    from tuneforge.data.format import IGNORE_INDEX, tokenize_example

    sequences, positions = [], []
    for row in rows:
        tokens = tokenize_example(tokenizer, row["messages"])
        # Position t predicts token t+1: keep t for every answer token at t+1.
        where = [t - 1 for t, label in enumerate(tokens.labels) if label != IGNORE_INDEX and t]
        sequences.append(tokens.input_ids)
        positions.append(where[:MAX_POSITIONS])
    return sequences, positions


@torch.inference_mode()
def answer_logits(
    model: Any, sequences: list[list[int]], positions: list[list[int]], pad_id: int, batch: int = 8
) -> list[torch.Tensor]:
    """Per row, [len(positions), vocab] float32 logits at `positions` (right-padded batches)."""
    from tuneforge.eval.decoding import model_device
    from tuneforge.train.loss import virtual_token_offset

    device = model_device(model)
    offset = virtual_token_offset(model)
    out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        keep = sorted({p for i in chunk for p in positions[i]})
        if not keep:
            continue
        index = {p: k for k, p in enumerate(keep)}
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            logits_to_keep=torch.tensor(keep, device=device) + offset,
            use_cache=False,
        ).logits.float()
        for row, i in enumerate(chunk):
            out[i] = logits[row, [index[p] for p in positions[i]]].cpu()
    return out


def predictions(model: Any, tokenizer: Any, rows: list[Row], labels: list[str] | None) -> list[str]:
    """The labels (classification) or greedy answers (generation) `tuneforge eval` would give."""
    from tuneforge.eval.labels import LabelSet
    from tuneforge.eval.predict import Predictor

    predictor = Predictor(model, tokenizer, batch_size=8)
    prompts = predictor.encode([row["messages"][:-1] for row in rows])
    if labels is not None:
        label_set = LabelSet.build(tokenizer, labels, rows[0]["messages"][:-1])
        return [labels[p.label] for p in predictor.classify(prompts, label_set)]
    longest = max(
        len(tokenizer(row["messages"][-1]["content"], add_special_tokens=False)["input_ids"])
        for row in rows
    )
    budget = min(GENERATION_CAP, max(8, math.ceil(1.5 * (longest + 1))))
    return [g.text for g in predictor.generate(prompts, budget)]


def reference(model: Any, tokenizer: Any, rows: list[Row], labels: list[str] | None) -> Reference:
    started = time.perf_counter()
    sequences, positions = _sequences(tokenizer, rows)
    logits = answer_logits(model, sequences, positions, int(tokenizer.pad_token_id))
    preds = predictions(model, tokenizer, rows, labels)
    return Reference(rows, sequences, positions, logits, preds, time.perf_counter() - started)


def compare(
    ref: Reference,
    model: Any,
    tokenizer: Any,
    labels: list[str] | None,
    min_agreement: float,
    *,
    export_tokenizer: Any = None,
) -> Agreement:
    """Run `model` (the reloaded export) on the reference rows and measure the agreement.

    `export_tokenizer`: the tokenizer the export carries, when it is not the run's (GGUF).
    """
    started = time.perf_counter()
    logits = answer_logits(model, ref.sequences, ref.positions, int(tokenizer.pad_token_id))
    preds = predictions(model, tokenizer, ref.rows, labels)
    same = [a == b for a, b in zip(ref.predictions, preds, strict=True)]
    positions = matches = 0
    max_diff = total_diff = 0.0
    cells = 0
    for want, got in zip(ref.logits, logits, strict=True):
        if not want.numel():
            continue
        diff = (want - got).abs()
        max_diff = max(max_diff, float(diff.max()))
        total_diff += float(diff.sum())
        cells += diff.numel()
        matches += int((want.argmax(-1) == got.argmax(-1)).sum())
        positions += want.shape[0]
    result = Agreement(
        rows=len(ref.rows),
        agreement=sum(same) / len(same),
        token_agreement=matches / positions if positions else 1.0,
        max_logit_diff=max_diff,
        mean_logit_diff=total_diff / cells if cells else 0.0,
        min_agreement=min_agreement,
        passed=False,
        seconds=round(time.perf_counter() - started, 2),
        disagreements=[
            {"row": i, "trained": ref.predictions[i], "export": preds[i]}
            for i, ok in enumerate(same)
            if not ok
        ][:5],
    )
    gold = [_gold(row, labels) for row in ref.rows]
    result.trained_accuracy = _accuracy(ref.predictions, gold)
    result.export_accuracy = _accuracy(preds, gold)
    if export_tokenizer is not None:
        from tuneforge.models.tokenizer import render

        texts = [render(tokenizer, r["messages"], generation_prompt=False) for r in ref.rows]
        ours = tokenizer(texts, add_special_tokens=False)["input_ids"]
        theirs = export_tokenizer(texts, add_special_tokens=False)["input_ids"]
        result.tokenizer_agreement = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(
            texts
        )
        result.chat_template_equal = export_tokenizer.chat_template == tokenizer.chat_template
    result.passed = (
        result.agreement >= min_agreement
        and (result.tokenizer_agreement is None or result.tokenizer_agreement >= min_agreement)
        and result.chat_template_equal is not False
    )
    return result


def _gold(row: Row, labels: list[str] | None) -> str:
    if labels is not None and isinstance(row.get("label"), str):
        return row["label"]
    return str(row["messages"][-1]["content"])


def _accuracy(predicted: list[str], gold: list[str]) -> float:
    """Exact match after whitespace trimming (the answer's own definition is eval's business)."""
    return sum(p.strip() == g.strip() for p, g in zip(predicted, gold, strict=True)) / len(gold)
