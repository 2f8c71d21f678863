"""An Ollama Modelfile whose TEMPLATE renders conversations exactly as training did.

Jinja chat templates cannot be translated to Go templates in general, so we do not translate:
we *measure* the training template. Rendering a probe conversation whose messages are unique
sentinel strings shows every piece of text the template puts around them -- the text before
and after each role's content, the generation prompt, a default system prompt inserted when
the conversation has none (SmolLM2's), and whether a system message is folded into the first
user turn (Gemma's). From those pieces we emit a Go template, then *prove* it: render it (with
`gotemplate`) and the Jinja template on several conversations, multi-turn included, and require
identical strings. A template outside these two shapes fails with a clear message instead of
exporting a model that is prompted differently from how it was trained.

Ollama prepends the Modelfile SYSTEM as a system message whenever a request has none, so the
TEMPLATE only ever sees `.Messages`; SYSTEM is the system prompt the training data shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.export import gotemplate

Messages = list[dict[str, str]]

_S, _U1, _A1, _U2 = "SYSq7Zx", "USRq7Zx1", "ASTq7Zx1", "USRq7Zx2"


@dataclass(frozen=True)
class TemplateParts:
    """The literal text a chat template puts around message contents."""

    family: str
    """"affix": each message is prefix + content + suffix; "fold": the system message is
    written at the start of the first user turn (Gemma)."""
    start: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str
    default_system: str | None = None
    fold_separator: str = ""


def _render(tokenizer: Any, messages: Messages, generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _between(text: str, before: str | None, after: str | None) -> str:
    start = text.index(before) + len(before) if before else 0
    end = text.index(after, start) if after else len(text)
    return text[start:end]


def _strip_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"{text!r} does not start with {prefix!r}")
    return text[len(prefix) :]


def _strip_suffix(text: str, suffix: str) -> str:
    if not text.endswith(suffix):
        raise ValueError(f"{text!r} does not end with {suffix!r}")
    return text[: len(text) - len(suffix)] if suffix else text


def derive_parts(tokenizer: Any) -> TemplateParts:
    """Measure the tokenizer's chat template (see the module docstring)."""
    sys_, u1, a1, u2 = (
        {"role": "system", "content": _S},
        {"role": "user", "content": _U1},
        {"role": "assistant", "content": _A1},
        {"role": "user", "content": _U2},
    )
    try:
        full_gen = _render(tokenizer, [sys_, u1, a1, u2], True)
        full = _render(tokenizer, [sys_, u1, a1, u2], False)
        through_answer = _render(tokenizer, [sys_, u1, a1], False)
        no_system = _render(tokenizer, [u1], True)
        if any(full_gen.count(s) != 1 for s in (_S, _U1, _A1, _U2)):
            raise ValueError("the template repeats or drops message contents")
        user_suffix = _between(full, _U2, None)
        generation = _strip_prefix(_between(full_gen, _U2, None), user_suffix)
        assistant_suffix = _between(through_answer, _A1, None)
        assistant_prefix = _strip_prefix(_between(full_gen, _U1, _A1), user_suffix)
        user_prefix = _strip_prefix(_between(full_gen, _A1, _U2), assistant_suffix)
        head = _between(full_gen, None, _S)  # start + system prefix (or + user prefix: fold)
        lead = _between(no_system, None, _U1)  # start (+ default system block) + user prefix
        between = _between(full_gen, _S, _U1)
    except Exception as exc:  # a template error, or the contents not found in the text
        raise _unsupported(f"cannot measure it ({exc})") from None
    prefix = {"user": user_prefix, "assistant": assistant_prefix}
    suffix = {"user": user_suffix, "assistant": assistant_suffix}
    if head == lead and head.endswith(user_prefix):  # the system text opens the first user turn
        start = _strip_suffix(head, user_prefix)
        return TemplateParts("fold", start, prefix, suffix, generation, fold_separator=between)
    if not between.endswith(user_prefix):
        raise _unsupported("the text between the system and first user message is irregular")
    suffix["system"] = _strip_suffix(between, user_prefix)
    bare = _strip_suffix(lead, user_prefix) if lead.endswith(user_prefix) else None
    if bare is not None and head.startswith(bare):  # no default system prompt
        prefix["system"] = head[len(bare) :]
        return TemplateParts("affix", bare, prefix, suffix, generation)
    if bare is not None and bare.startswith(head) and bare.endswith(suffix["system"]):
        prefix["system"] = head
        default = _strip_suffix(bare[len(head) :], suffix["system"])
        return TemplateParts("affix", "", prefix, suffix, generation, default_system=default)
    raise _unsupported("the conversation start without a system message is irregular")


def _unsupported(why: str) -> TuneforgeError:
    return TuneforgeError(
        f"the run's chat template cannot be reproduced as an Ollama TEMPLATE: {why}; export "
        "--to gguf and write the Modelfile TEMPLATE by hand"
    )


def _literal(text: str) -> str:
    if "{{" in text or "}}" in text or '"""' in text:
        raise _unsupported(f"its text {text!r} contains Go template or Modelfile delimiters")
    return text


def go_template(parts: TemplateParts) -> str:
    """The TEMPLATE for `parts`. One line of actions: Go's `{{-` trimming would eat the
    template's own newlines, so no formatting whitespace is added around actions."""
    p = {role: _literal(text) for role, text in parts.prefix.items()}
    s = {role: _literal(text) for role, text in parts.suffix.items()}
    start, generation = _literal(parts.start), _literal(parts.generation)
    user = '{{ else if eq $m.Role "user" }}'
    assistant = f'{{{{ else if eq $m.Role "assistant" }}}}{p["assistant"]}{{{{ $m.Content }}}}{s["assistant"]}'
    if parts.family == "fold":
        separator = _literal(parts.fold_separator)
        after_system = '(and (eq $i 1) (eq (index $.Messages 0).Role "system"))'
        return (
            f"{{{{ range $i, $m := .Messages }}}}{{{{ if eq $i 0 }}}}{start}{{{{ end }}}}"
            f'{{{{ if eq $m.Role "system" }}}}{p["user"]}{{{{ $m.Content }}}}{separator}'
            f"{user}{{{{ if not {after_system} }}}}{p['user']}{{{{ end }}}}"
            f"{{{{ $m.Content }}}}{s['user']}{assistant}{{{{ end }}}}{{{{ end }}}}{generation}"
        )
    default = ""
    if parts.default_system is not None:
        block = p["system"] + _literal(parts.default_system) + s["system"]
        default = f'{{{{ if ne $m.Role "system" }}}}{block}{{{{ end }}}}'
    opening = f"{{{{ if eq $i 0 }}}}{start}{default}{{{{ end }}}}" if start or default else ""
    return (
        f"{{{{ range $i, $m := .Messages }}}}{opening}"
        f'{{{{ if eq $m.Role "system" }}}}{p["system"]}{{{{ $m.Content }}}}{s["system"]}'
        f"{user}{p['user']}{{{{ $m.Content }}}}{s['user']}{assistant}{{{{ end }}}}{{{{ end }}}}"
        f"{generation}"
    )


def probe_conversations(system: str | None = None) -> list[Messages]:
    """Conversations the TEMPLATE must render exactly as Jinja does (multi-turn included)."""
    sys_msg = {"role": "system", "content": system or "You are a support classifier.\nBe brief."}
    turns = [
        {"role": "user", "content": "Where is my order? It's been 3 days."},
        {"role": "assistant", "content": "order_status"},
        {"role": "user", "content": 'Refund "please" {now}\n\n  thanks'},
        {"role": "assistant", "content": "refund_request"},
        {"role": "user", "content": "ok"},
    ]
    return [turns[:1], [sys_msg, *turns[:1]], [sys_msg, *turns[:3]], turns, [sys_msg, *turns]]


def check_template(template: str, tokenizer: Any, system: str | None = None) -> None:
    """Raise unless `template` renders every probe conversation as the tokenizer's template."""
    for messages in probe_conversations(system):
        expected = _render(tokenizer, messages, True)
        got = gotemplate.render(template, gotemplate.ollama_data(messages))
        if got != expected:
            raise TuneforgeError(
                f"internal: the Ollama TEMPLATE renders {got!r} where the chat template renders "
                f"{expected!r}; export --to gguf and write the TEMPLATE by hand"
            )


def shared_system_prompt(rows: list[dict[str, Any]]) -> str | None:
    """The system message every training row starts with, or None (none, or they differ)."""
    systems = set()
    for row in rows:
        messages = row.get("messages") or []
        first = messages[0] if messages else {}
        systems.add(first.get("content") if first.get("role") == "system" else None)
    return systems.pop() if len(systems) == 1 else None


def _quoted(text: str) -> str:
    if '"""' in text:
        raise TuneforgeError('the system prompt contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile(
    gguf_name: str, template: str, stops: list[str], system: str | None, *, temperature: float = 0
) -> str:
    """The Modelfile text: FROM, TEMPLATE, SYSTEM, stop tokens and greedy decoding."""
    lines = [
        "# Written by `tuneforge export --to ollama`. The TEMPLATE reproduces the training chat",
        "# template (checked by rendering both); the stops are the template's turn ends.",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(template)}",
    ]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    for stop in stops:
        lines.append(f'PARAMETER stop "{stop}"')
    lines.append("# Greedy, as the export was validated; raise it for more varied answers.")
    lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"
