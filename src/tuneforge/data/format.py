"""Render chat examples with a tokenizer's chat template and mask everything but the answers.

The loss is taken only on assistant tokens (their content and the end-of-turn marker that
teaches the model to stop); system and user tokens get IGNORE_INDEX. Answer spans are found
in characters by rendering each conversation prefix with `add_generation_prompt=True`, then
mapped to tokens through the fast tokenizer's offsets, so any template that renders prefixes
as string prefixes works without per-model rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.data.records import Message
from tuneforge.errors import TuneforgeError

IGNORE_INDEX = -100


def round_up(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple` (1: unchanged), e.g. a padded width."""
    return -(-length // multiple) * multiple


@dataclass(frozen=True)
class Rendered:
    text: str
    answer_spans: list[tuple[int, int]]  # [start, end) character ranges that carry loss


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken

    @property
    def num_answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _template(tokenizer: Any, messages: list[Message], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def render(tokenizer: Any, messages: list[Message]) -> Rendered:
    """The full conversation text and the character spans of every assistant answer."""
    full = _template(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _template(tokenizer, messages[:i], generation_prompt=True)
        through = _template(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (through.startswith(prefix) and full.startswith(through)):
            raise TuneforgeError(
                "the chat template does not render conversation prefixes as text prefixes, so "
                "answer tokens cannot be located; use a standard template (model.chat_template)"
            )
        # Trailing whitespace after the end-of-turn marker is template glue, not answer.
        end = len(through.rstrip())
        spans.append((len(prefix), max(end, len(prefix))))
    return Rendered(full, spans)


def prompt_text(tokenizer: Any, messages: list[Message]) -> str:
    """What the model sees before it answers: the conversation minus the final answer."""
    return _template(tokenizer, messages[:-1], generation_prompt=True)


def tokenize_rendered(tokenizer: Any, rendered: Rendered) -> Tokenized:
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for index, (start, _end) in enumerate(encoding["offset_mapping"]):
        if any(lo <= start < hi for lo, hi in rendered.answer_spans):
            labels[index] = ids[index]
    return Tokenized(ids, labels)


def tokenize_example(tokenizer: Any, messages: list[Message]) -> Tokenized:
    """input_ids and labels for one conversation (no truncation: callers decide)."""
    return tokenize_rendered(tokenizer, render(tokenizer, messages))


def token_lengths(tokenizer: Any, conversations: list[list[Message]]) -> list[int]:
    """Rendered length in tokens of each conversation, tokenized in one batch."""
    if not conversations:
        return []
    texts = [_template(tokenizer, m, generation_prompt=False) for m in conversations]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]
