"""Detect a file's record format and turn each raw record into a validated chat `Example`.

Formats:
- `chat`: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
- `alpaca`: {"instruction": str, "input": str (optional), "output": str}
- `prompt_completion`: {"prompt": str, "completion" | "response": str}
- `text_label`: {"text": str, "label": str | int} (CSV columns chosen with --text-col/--label-col)
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from tuneforge.data.clean import normalize_text
from tuneforge.data.records import Example, Message, Problem, RawRecord, json_kind

ROLES = ("system", "user", "assistant")
TEXT_ALIASES = ("text", "sentence", "utterance")
LABEL_ALIASES = ("label", "category", "intent", "class")
DEFAULT_CLASSIFICATION_SYSTEM = "Classify the message. Answer with the label only."


@dataclass(frozen=True)
class Columns:
    """Which fields hold what, once the format is known."""

    format: str
    text: str = "text"
    label: str = "label"
    prompt: str = "prompt"
    response: str = "completion"


@dataclass(frozen=True)
class ConvertOptions:
    task: str  # "classification" or "generation", already resolved
    system: str | None
    template: str  # contains "{text}"


def detect_columns(
    keys: list[str],
    forced_format: str = "auto",
    text_col: str | None = None,
    label_col: str | None = None,
    prompt_col: str | None = None,
    response_col: str | None = None,
) -> Columns | str:
    """Columns for a record with these keys, or a message saying why none fits."""
    have = set(keys)
    listed = ", ".join(keys) if keys else "(none)"
    if text_col or label_col or forced_format == "text_label":
        text = text_col or _first(have, TEXT_ALIASES)
        label = label_col or _first(have, LABEL_ALIASES)
        missing = [
            f"{flag} {name!r}" if name else f"a {what} column ({flag})"
            for flag, name, what in (("--text-col", text, "text"), ("--label-col", label, "label"))
            if not name or name not in have
        ]
        if missing:
            return f"no {' or '.join(missing)} found; fields are: {listed}"
        return Columns("text_label", text=text, label=label)
    if prompt_col or response_col or forced_format == "prompt_completion":
        prompt = prompt_col or _first(have, ("prompt",))
        response = response_col or _first(have, ("completion", "response"))
        missing = [
            f"{flag} {name!r}" if name else f"a {what} column ({flag})"
            for flag, name, what in (
                ("--prompt-col", prompt, "prompt"),
                ("--response-col", response, "response"),
            )
            if not name or name not in have
        ]
        if missing:
            return f"no {' or '.join(missing)} found; fields are: {listed}"
        return Columns("prompt_completion", prompt=prompt, response=response)
    if forced_format in ("chat", "auto") and "messages" in have:
        return Columns("chat")
    if forced_format in ("alpaca", "auto") and {"instruction", "output"} <= have:
        return Columns("alpaca")
    if forced_format == "auto":
        if "prompt" in have and ({"completion", "response"} & have):
            return Columns("prompt_completion", response=_first(have, ("completion", "response")))
        text, label = _first(have, TEXT_ALIASES), _first(have, LABEL_ALIASES)
        if text and label:
            return Columns("text_label", text=text, label=label)
    wanted = {
        "chat": "'messages'",
        "alpaca": "'instruction' and 'output'",
    }.get(forced_format)
    if wanted:
        return f"--format {forced_format} needs fields {wanted}; fields are: {listed}"
    return (
        f"cannot tell the format from fields {listed}: expected 'messages' (chat), "
        "'instruction'+'output' (alpaca), 'prompt'+'completion', or 'text'+'label'; "
        "name the columns with --text-col/--label-col or --prompt-col/--response-col"
    )


def _first(have: set[str], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in have), None)


def bad_characters(value: str) -> str | None:
    """Describe the first control character or decoding artefact in `value`, if any."""
    for pos, char in enumerate(value):
        if char in "\t\n\r":
            continue
        if char == "\ufffd":
            return (
                f"contains U+FFFD (a replacement character) at position {pos}: the text was "
                "decoded with the wrong encoding upstream; fix the source file's encoding"
            )
        if char == "\ufeff":
            return f"contains a byte-order mark (U+FEFF) at position {pos}; remove it"
        if unicodedata.category(char) == "Cc":
            return (
                f"contains control character U+{ord(char):04X} at position {pos}; "
                "remove it (it is invisible and changes tokenization)"
            )
    return None


def to_example(record: RawRecord, columns: Columns, options: ConvertOptions) -> Example | Problem:
    """Validate one record and build its chat messages; a Problem names the field at fault."""
    try:
        if columns.format == "chat":
            return _from_chat(record, options)
        if columns.format == "alpaca":
            instruction = _text(record, "instruction")
            extra = record.fields.get("input")
            if extra is not None and not isinstance(extra, str):
                raise _Bad("input", f"must be a string, found {json_kind(extra)}")
            user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
            system = record.fields.get("system")
            if system is not None and not isinstance(system, str):
                raise _Bad("system", f"must be a string, found {json_kind(system)}")
            return _single_turn(record, options, user, _text(record, "output"), system or None)
        if columns.format == "prompt_completion":
            return _single_turn(
                record,
                options,
                _text(record, columns.prompt),
                _text(record, columns.response),
                None,
            )
        return _single_turn(
            record, options, _text(record, columns.text), _label(record, columns.label), None
        )
    except _Bad as bad:
        return Problem(record.where, bad.message, field=bad.field, raw=record.fields)


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


def _text(record: RawRecord, name: str) -> str:
    if name not in record.fields:
        raise _Bad(name, "is missing")
    value = record.fields[name]
    if not isinstance(value, str):
        raise _Bad(name, f"must be a string, found {json_kind(value)}")
    if not value.strip():
        raise _Bad(name, "is empty")
    if (why := bad_characters(value)) is not None:
        raise _Bad(name, why)
    return normalize_text(value)


def _label(record: RawRecord, name: str) -> str:
    value = record.fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # integer class ids are common; they become label strings
    label = _text(record, name)
    if "\n" in label:
        raise _Bad(name, "must be a single line")
    return normalize_text(label, single_line=True)


def _single_turn(
    record: RawRecord, options: ConvertOptions, user: str, answer: str, system: str | None
) -> Example:
    system = system or options.system
    if options.task == "classification":
        user = normalize_text(user, single_line=True)
    if system is None and options.task == "classification":
        system = DEFAULT_CLASSIFICATION_SYSTEM
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": options.template.replace("{text}", user)})
    messages.append({"role": "assistant", "content": answer})
    if options.task != "classification":
        return Example(messages=messages, where=record.where)
    label = normalize_text(answer, single_line=True)
    messages[-1]["content"] = label
    return Example(messages=messages, where=record.where, label=label, text=user)


def _from_chat(record: RawRecord, options: ConvertOptions) -> Example:
    if "messages" not in record.fields:
        found = ", ".join(sorted(record.fields)) or "none"
        raise _Bad("messages", f"is missing (fields: {found}); chat rows need a messages list")
    raw = record.fields["messages"]
    if not isinstance(raw, list):
        raise _Bad("messages", f"must be a list of messages, found {json_kind(raw)}")
    if not raw:
        raise _Bad("messages", "is empty")
    messages: list[Message] = []
    for i, turn in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(turn, dict):
            raise _Bad(where, f"must be an object with role and content, found {json_kind(turn)}")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            problem = "is missing" if "role" not in turn else f"unknown role {role!r}"
            raise _Bad(f"{where}.role", f"{problem}; expected system, user or assistant")
        if "content" not in turn:
            raise _Bad(f"{where}.content", "is missing")
        if not isinstance(content, str):
            raise _Bad(f"{where}.content", f"must be a string, found {json_kind(content)}")
        if not content.strip():
            raise _Bad(f"{where}.content", "is empty")
        if (why := bad_characters(content)) is not None:
            raise _Bad(f"{where}.content", why)
        if role == "system" and i != 0:
            raise _Bad(f"{where}.role", "a system message may only come first")
        messages.append({"role": role, "content": normalize_text(content)})
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if not turns or turns[0] != "user":
        raise _Bad("messages", "the first message after the system prompt must be from the user")
    for i in range(1, len(turns)):
        if turns[i] == turns[i - 1]:
            raise _Bad(
                "messages", f"two {turns[i]} messages in a row; user and assistant alternate"
            )
    if turns[-1] != "assistant":
        raise _Bad(
            f"messages[{len(raw) - 1}]",
            "the conversation must end with an assistant message (the answer to train on)",
        )
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if options.system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": options.system})
    if options.template != "{text}":
        for m in messages:
            if m["role"] == "user":
                m["content"] = options.template.replace("{text}", m["content"])
    example = Example(messages=messages, where=record.where)
    if options.task == "classification":
        example.label = normalize_text(messages[-1]["content"], single_line=True)
        messages[-1]["content"] = example.label
        example.text = normalize_text(last_user, single_line=True)
    return example
