"""The records that flow through `prepare`: where each came from, and what is wrong with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import TuneforgeError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


def json_kind(value: object) -> str:
    """How a message names a JSON value's type: "an object", "a list", "a number", "null"..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), f"a value of type {type(value).__name__}")


@dataclass(frozen=True)
class Location:
    """Where a record came from: a 1-based line of a text file, or a row of a table."""

    file: str
    line: int | None = None
    unit: str = "line"  # "line" for CSV/JSON text files, "row" for Parquet and hub datasets

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.unit == "line":
            return f"{self.file}:{self.line}"
        return f"{self.file} {self.unit} {self.line}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, named precisely enough to fix."""

    where: Location
    message: str
    field: str | None = None
    raw: Any = None  # the offending row or line, written to rejected.jsonl with --on-error skip

    def __str__(self) -> str:
        what = f"field '{self.field}': " if self.field else ""
        return f"{self.where}: {what}{self.message}"


@dataclass(frozen=True)
class RawRecord:
    """One object read from a file (a JSON object, a CSV row as a dict), not yet interpreted."""

    fields: dict[str, Any]
    where: Location


@dataclass
class Example:
    """One training example in chat form; `label` and `text` are set for classification."""

    messages: list[Message]
    where: Location
    label: str | None = None
    text: str | None = None  # the classification input, before the template wraps it
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[Message]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]


class DataError(TuneforgeError):
    """Input data that cannot be used; lists the first problems with file:line and field."""

    max_shown = 10

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = problems
        self.hint = hint
        shown = [str(p) for p in problems[: self.max_shown]]
        more = len(problems) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problem{'s' if more > 1 else ''}")
        if hint:
            shown.append(hint)
        super().__init__("\n".join(shown))
