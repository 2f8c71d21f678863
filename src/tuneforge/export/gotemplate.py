"""A small interpreter for the subset of Go's text/template that Ollama TEMPLATEs use.

Why: the export promises that the Modelfile TEMPLATE renders the conversation exactly as the
training chat template (Jinja) does. Ollama is not installed here, so we render the Go template
ourselves and compare strings. Supported (enough for every TEMPLATE `ollama.py` emits and for
the common hand-written ones): text; `{{- ` / ` -}}` whitespace trimming; comments;
`if` / `else if` / `else` / `end`; `range [$i, $m :=] PIPE` / `end`; printing a pipeline;
operands `.`, `.Field.Sub`, `$`, `$var.Field`, "strings", `raw`, integers, true/false,
`(pipeline).Field`; `|` pipes; functions eq ne lt le gt ge and or not len index slice.
Data is Python dicts (fields are keys, e.g. {"Messages": [{"Role": ..., "Content": ...}]}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import TuneforgeError

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+)
    | (?P<decl>:=)
    | (?P<punct>[()|,=])
    | (?P<var>\$[A-Za-z0-9_]*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
    | (?P<dot>\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _error(message: str) -> TuneforgeError:
    return TuneforgeError(f"Go template: {message}")


@dataclass
class _Tok:
    kind: str
    text: str
    attached: bool
    """No whitespace before it (a field access on a parenthesized pipeline)."""


def _lex(action: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(action):
        if action[pos:].strip() == "":
            break
        match = _TOKEN.match(action, pos)
        if match is None:
            raise _error(f"cannot parse {action[pos:]!r}")
        attached = match.start(match.lastgroup) == pos and pos > 0
        tokens.append(_Tok(str(match.lastgroup), match.group(match.lastgroup), attached))
        pos = match.end()
    return tokens


# ---------------------------------------------------------------------------------------------
# parsing: text/actions -> a tree of nodes
# ---------------------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Print:
    pipe: list[_Tok]


@dataclass
class _If:
    branches: list[tuple[list[_Tok], list[Any]]] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


@dataclass
class _Range:
    names: list[str]
    pipe: list[_Tok]
    body: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


def _split(template: str) -> list[tuple[str, str]]:
    """[("text", ...), ("action", ...)] with Go's trim markers applied."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = template.find("{{", pos)
        text = template[pos:] if start < 0 else template[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            parts.append(("text", text))
            return parts
        end = template.find("}}", start)
        if end < 0:
            raise _error("unclosed action '{{'")
        inner = template[start + 2 : end]
        if inner.startswith("- ") or inner.startswith("-\n"):
            text = text.rstrip(" \t\r\n")
            inner = inner[2:]
        trim_next = inner.endswith(" -") or inner.endswith("\n-")
        if trim_next:
            inner = inner[:-2]
        parts.append(("text", text))
        parts.append(("action", inner.strip()))
        pos = end + 2


def parse(template: str) -> list[Any]:
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = []  # (open node, the body being filled)
    body = root
    for kind, value in _split(template):
        if kind == "text":
            if value:
                body.append(_Text(value))
            continue
        if value.startswith("/*"):
            continue
        tokens = _lex(value)
        if not tokens:
            raise _error("empty action {{ }}")
        head = tokens[0].text if tokens[0].kind == "ident" else None
        if head == "if":
            node = _If([(tokens[1:], [])])
            body.append(node)
            stack.append((node, body))
            body = node.branches[0][1]
        elif head == "range":
            names, pipe = [], tokens[1:]
            if any(t.kind == "decl" for t in pipe):
                split = next(i for i, t in enumerate(pipe) if t.kind == "decl")
                names = [t.text for t in pipe[:split] if t.kind == "var"]
                pipe = pipe[split + 1 :]
            node = _Range(names, pipe)
            body.append(node)
            stack.append((node, body))
            body = node.body
        elif head == "else":
            if not stack:
                raise _error("{{ else }} outside if/range")
            node = stack[-1][0]
            if isinstance(node, _If) and len(tokens) > 1 and tokens[1].text == "if":
                node.branches.append((tokens[2:], []))
                body = node.branches[-1][1]
            else:
                body = node.otherwise
        elif head == "end":
            if not stack:
                raise _error("{{ end }} without if/range")
            body = stack.pop()[1]
        elif head in ("with", "define", "template", "block", "break", "continue"):
            raise _error(f"{{{{ {head} }}}} is not supported by this renderer")
        elif len(tokens) > 1 and tokens[0].kind == "var" and tokens[1].kind in ("decl", "punct"):
            raise _error("variable assignment is not supported by this renderer")
        else:
            body.append(_Print(tokens))
    if stack:
        raise _error("missing {{ end }}")
    return root


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    return value is not None and value is not False and value != 0 and value != "" and (
        not isinstance(value, (list, dict, tuple)) or len(value) > 0
    )  # fmt: skip


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name)
    raise _error(f"cannot read field .{name} of {type(value).__name__}")


def _fields(value: Any, chain: str) -> Any:
    for name in chain.split(".")[1:]:
        value = _field(value, name)
    return value


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        value = value[key]
    return value


def _slice(value: Any, *bounds: int) -> Any:
    return value[bounds[0] : bounds[1]] if len(bounds) > 1 else value[bounds[0] :]


_FUNCS = {
    "eq": lambda a, *rest: any(a == b for b in rest),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda a: not _truth(a),
    "len": len,
    "index": _index,
    "slice": _slice,
}


class _Scope:
    def __init__(self, root: Any) -> None:
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def get(self, name: str) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise _error(f"undefined variable {name}")


def _operand(tokens: list[_Tok], pos: int, dot: Any, scope: _Scope) -> tuple[Any, int]:
    tok = tokens[pos]
    if tok.kind == "str":
        text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), tok.text[1:-1])
        return text, pos + 1
    if tok.kind == "raw":
        return tok.text[1:-1], pos + 1
    if tok.kind == "num":
        return int(tok.text), pos + 1
    if tok.kind == "dot":
        return dot, pos + 1
    if tok.kind == "field":
        return _fields(dot, tok.text), pos + 1
    if tok.kind == "var":
        value, pos = scope.get(tok.text), pos + 1
        if pos < len(tokens) and tokens[pos].kind == "field" and tokens[pos].attached:
            value, pos = _fields(value, tokens[pos].text), pos + 1
        return value, pos
    if tok.kind == "ident" and tok.text in ("true", "false"):
        return tok.text == "true", pos + 1
    if tok.kind == "ident" and tok.text == "nil":
        return None, pos + 1
    if tok.text == "(":
        depth, end = 0, pos
        for end in range(pos, len(tokens)):
            depth += (
                {"(": 1, ")": -1}.get(tokens[end].text, 0) if tokens[end].kind == "punct" else 0
            )
            if depth == 0:
                break
        if depth:
            raise _error("unbalanced parentheses")
        value, pos = _pipeline(tokens[pos + 1 : end], dot, scope), end + 1
        if pos < len(tokens) and tokens[pos].kind == "field" and tokens[pos].attached:
            value, pos = _fields(value, tokens[pos].text), pos + 1
        return value, pos
    raise _error(f"unexpected {tok.text!r}")


def _command(tokens: list[_Tok], dot: Any, scope: _Scope, piped: list[Any]) -> Any:
    head = tokens[0]
    if head.kind == "ident" and head.text in ("and", "or"):
        # Go evaluates and/or lazily and returns the deciding argument itself.
        pos, value = 1, None
        while pos < len(tokens):
            value, pos = _operand(tokens, pos, dot, scope)
            if _truth(value) != (head.text == "and"):
                return value
        for value in piped:
            if _truth(value) != (head.text == "and"):
                return value
        return value
    if head.kind == "ident" and head.text in _FUNCS:
        args, pos = [], 1
        while pos < len(tokens):
            value, pos = _operand(tokens, pos, dot, scope)
            args.append(value)
        try:
            return _FUNCS[head.text](*args, *piped)
        except (TypeError, IndexError, KeyError) as exc:
            raise _error(f"{head.text}: {exc}") from None
    if head.kind == "ident" and head.text not in ("true", "false", "nil"):
        raise _error(f"function {head.text!r} is not supported by this renderer")
    value, pos = _operand(tokens, 0, dot, scope)
    if pos != len(tokens) or piped:
        raise _error("a value cannot take arguments")
    return value


def _pipeline(tokens: list[_Tok], dot: Any, scope: _Scope) -> Any:
    commands: list[list[_Tok]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "punct" and tok.text in "()":
            depth += 1 if tok.text == "(" else -1
        if tok.kind == "punct" and tok.text == "|" and depth == 0:
            commands.append([])
        else:
            commands[-1].append(tok)
    if any(not command for command in commands):
        raise _error("empty command in pipeline")
    value = _command(commands[0], dot, scope, [])
    for command in commands[1:]:
        value = _command(command, dot, scope, [value])
    return value


def _format(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _run(nodes: list[Any], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Print):
            out.append(_format(_pipeline(node.pipe, dot, scope)))
        elif isinstance(node, _If):
            for pipe, body in node.branches:
                if _truth(_pipeline(pipe, dot, scope)):
                    _run(body, dot, scope, out)
                    break
            else:
                _run(node.otherwise, dot, scope, out)
        elif isinstance(node, _Range):
            items = _pipeline(node.pipe, dot, scope)
            if not _truth(items):
                _run(node.otherwise, dot, scope, out)
                continue
            for index, item in enumerate(items):
                frame: dict[str, Any] = {}
                if len(node.names) == 1:
                    frame[node.names[0]] = item
                elif len(node.names) == 2:
                    frame[node.names[0]], frame[node.names[1]] = index, item
                scope.vars.append(frame)
                _run(node.body, item, scope, out)
                scope.vars.pop()


def render(template: str, data: dict[str, Any]) -> str:
    """Render a Go text/template (the supported subset) with `data`."""
    out: list[str] = []
    _run(parse(template), data, _Scope(data), out)
    return "".join(out)


def ollama_data(messages: list[dict[str, str]], system: str | None = None) -> dict[str, Any]:
    """The template data Ollama builds for a chat request (see `ollama.py` for SYSTEM)."""
    converted = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    return {"Messages": converted, "System": system or "", "Prompt": "", "Response": ""}
