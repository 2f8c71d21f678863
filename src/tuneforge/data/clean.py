"""Normalize text, drop exact duplicates, and resolve the same text under different labels."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tuneforge.data.records import Example

_SPACES = re.compile(r"[^\S\n]+")  # whitespace except newlines
_BLANK_RUNS = re.compile(r"\n{3,}")
_ANY_SPACE = re.compile(r"\s+")


def normalize_text(value: str, single_line: bool = False) -> str:
    """NFC, unified newlines, no trailing spaces; `single_line` also collapses all whitespace.

    Generation answers keep their line structure (code, JSON, lists); indentation is kept.
    """
    value = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n")
    if single_line:
        return _ANY_SPACE.sub(" ", value).strip()
    lines = [line.rstrip() for line in value.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def dedupe_key(value: str) -> str:
    """Case- and spacing-insensitive identity used for duplicates and conflicts."""
    return (
        _SPACES.sub(" ", _ANY_SPACE.sub(" ", unicodedata.normalize("NFKC", value)))
        .casefold()
        .strip()
    )


def identity(example: Example) -> str:
    """What two examples must share to be duplicates: the input for classification, else all."""
    if example.label is not None and example.text is not None:
        return dedupe_key(example.text)
    return "\x1e".join(f"{m['role']}:{dedupe_key(m['content'])}" for m in example.messages)


@dataclass
class DedupeResult:
    kept: list[Example]
    duplicates: list[tuple[Example, Example]] = field(default_factory=list)  # (dropped, kept one)
    conflicts: list[list[Example]] = field(default_factory=list)  # same text, several labels
    conflict_dropped: list[Example] = field(default_factory=list)


def drop_exact_duplicates(examples: list[Example], conflicts: str = "drop") -> DedupeResult:
    """Keep the first of each identical example; resolve classification conflicts by policy.

    conflicts: "drop" removes every row of a conflicting text, "majority" keeps the majority
    label (and drops on a tie), "keep" keeps one row per label.
    """
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[identity(example)].append(example)
    result = DedupeResult(kept=[])
    chosen: set[int] = set()
    for members in groups.values():
        labels = Counter(m.label for m in members)
        if len(labels) > 1:
            result.conflicts.append(members)
            keep_labels = _resolve(labels, conflicts)
            for label in keep_labels:
                first = next(m for m in members if m.label == label)
                chosen.add(id(first))
                result.duplicates.extend(
                    (m, first) for m in members if m.label == label and m is not first
                )
            result.conflict_dropped.extend(m for m in members if m.label not in keep_labels)
            continue
        chosen.add(id(members[0]))
        result.duplicates.extend((m, members[0]) for m in members[1:])
    result.kept = [e for e in examples if id(e) in chosen]
    return result


def _resolve(labels: Counter, policy: str) -> set[str | None]:
    if policy == "keep":
        return set(labels)
    if policy == "majority":
        (top, n_top), *rest = labels.most_common()
        if not rest or rest[0][1] < n_top:
            return {top}
    return set()
