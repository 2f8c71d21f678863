"""The label set of a classification task: each label's answer tokens, and their token trie.

Every label is tokenized as the chat template renders an answer (label text + turn-end token,
e.g. `<|im_end|>`), exactly as training tokenized it. Constrained decoding
(`eval.predict.Predictor.classify_constrained`) walks the trie of these sequences, and exact
scoring (`Predictor.score_labels`) scores each sequence whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.format import IGNORE_INDEX, tokenize_example
from tuneforge.errors import TuneforgeError

Messages = list[dict[str, str]]


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
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

    def trie(self) -> TrieNode:
        root = TrieNode()
        for index, seq in enumerate(self.sequences):
            node = root
            for token in seq:
                node = node.children.setdefault(token, TrieNode())
            node.label = index
        root.settle()
        return root
