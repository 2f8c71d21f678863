"""Tokenizer policy: a pad token, one chat template, and saving both with a run.

Pad token: base models often ship none, and batching needs one. We reuse eos (else unk) rather
than add a new token, because a new token would grow the vocabulary and force resizing (and
training) the embedding matrix. Padded positions are masked by the attention mask and labels,
so sharing the id with eos is harmless.

Chat template, in order of precedence:
  1. `ModelConfig.chat_template`: a Jinja file, used as-is;
  2. the model's own template (SmolLM2 ships ChatML);
  3. a fallback, for base models that ship none (Gemma 3 270M). A fine-tune still needs *some*
     turn format, and reusing the turn markers the vocabulary already has keeps each marker one
     token, which the model learns faster than a marker spelled out in pieces:
       - Gemma style, when the vocabulary has `<start_of_turn>`/`<end_of_turn>` (Gemma 3 base):
         `<bos><start_of_turn>user\\n{system\\n\\n}{content}<end_of_turn>\\n<start_of_turn>model\\n...`,
         the format of Gemma's instruction-tuned models (which fold the system prompt into the
         first user turn, as Gemma has no system role);
       - ChatML otherwise: `<|im_start|>{role}\\n{content}{END}\\n`, where END is `<|im_end|>` if
         the vocabulary has it and the eos token if not, so generation stops on a single token.
     Both have the *prefix property* that loss masking relies on: rendering messages[:i] with
     add_generation_prompt=True is a string prefix of rendering messages[:i+1] when message i is
     the assistant's. `template_prefix_problem` checks it for any template.

The template text ends up in the tokenizer (`tokenizer.chat_template`), and `save_tokenizer`
writes it with the tokenizer (chat_template.jinja), so eval/export/serve render prompts with the
exact template training used. Note: the Gemma fallback writes `<bos>` itself, so encode rendered
chats with `add_special_tokens=False` (true of any template that emits bos).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tuneforge.errors import TuneforgeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TemplateSource = Literal["file", "model", "fallback-chatml", "fallback-gemma"]

GEMMA_FALLBACK_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (system if loop.first else '') + message['content']"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_CHATML_FALLBACK = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + END + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Tokens that end an assistant turn in the templates above (and in most chat models' own).
_TURN_END_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")

_SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def _has_token(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    return token in tokenizer.get_vocab()


def chatml_fallback_template(end_token: str = "<|im_end|>") -> str:
    """The ChatML fallback with `end_token` closing each turn (a Jinja string literal)."""
    literal = "'" + end_token.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return _CHATML_FALLBACK.replace("END", literal)


def fallback_template(tokenizer: PreTrainedTokenizerBase) -> tuple[str, TemplateSource]:
    """The fallback turn template for a tokenizer without one (see the module docstring)."""
    if _has_token(tokenizer, "<start_of_turn>") and _has_token(tokenizer, "<end_of_turn>"):
        return GEMMA_FALLBACK_TEMPLATE, "fallback-gemma"
    if _has_token(tokenizer, "<|im_end|>") or tokenizer.eos_token is None:
        return chatml_fallback_template("<|im_end|>"), "fallback-chatml"
    return chatml_fallback_template(str(tokenizer.eos_token)), "fallback-chatml"


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> str:
    """Give the tokenizer a pad token if it has none (eos, else unk); returns the pad token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise TuneforgeError(
                "the tokenizer has no pad, eos or unk token to pad batches with; "
                "use a model whose tokenizer defines an eos token"
            )
    return str(tokenizer.pad_token)


def read_template_file(path: str | Path) -> str:
    """The text of a user's Jinja chat template file (`set_chat_template` checks it renders)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TuneforgeError(f"model.chat_template: {path}: template file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TuneforgeError(f"model.chat_template: {path}: not UTF-8 text") from None
    if not text.strip():
        raise TuneforgeError(f"model.chat_template: {path}: the template file is empty")
    return text


def _check_renders(tokenizer: PreTrainedTokenizerBase, origin: str) -> None:
    """Fail early, naming the template, instead of deep inside training or serving."""
    try:
        tokenizer.apply_chat_template(
            _SAMPLE_CONVERSATION, tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:  # jinja2 TemplateError and friends: any failure means unusable
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TuneforgeError(f"{origin}: the chat template does not render{where}: {exc}") from None


def set_chat_template(
    tokenizer: PreTrainedTokenizerBase, template_file: str | Path | None = None
) -> TemplateSource:
    """Settle `tokenizer.chat_template` (file > model's own > fallback); returns its source."""
    if template_file is not None:
        tokenizer.chat_template = read_template_file(template_file)
        _check_renders(tokenizer, f"model.chat_template: {template_file}")
        return "file"
    if isinstance(tokenizer.chat_template, str) and tokenizer.chat_template.strip():
        return "model"
    if isinstance(tokenizer.chat_template, dict) and "default" in tokenizer.chat_template:
        # Several named templates: training uses the default one, so keep only that.
        tokenizer.chat_template = tokenizer.chat_template["default"]
        return "model"
    template, source = fallback_template(tokenizer)
    tokenizer.chat_template = template
    return source


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, template_file: str | Path | None = None
) -> TemplateSource:
    """Pad token + chat template, in place. Returns the template's source."""
    ensure_pad_token(tokenizer)
    return set_chat_template(tokenizer, template_file)


def render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], *, generation_prompt: bool
) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def template_prefix_problem(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]] | None = None
) -> str | None:
    """None if the template has the prefix property on `messages` (a sample by default).

    Otherwise a description of the first assistant turn where rendering messages[:i] with the
    generation prompt is not a prefix of rendering messages[:i+1]: loss masking by prefix would
    then mark the wrong tokens as the response.
    """
    messages = messages or _SAMPLE_CONVERSATION
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == 0:
            continue
        prompt = render(tokenizer, messages[:i], generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not full.startswith(prompt):
            return (
                f"the chat template is not prefix-stable at message {i}: the prompt rendering "
                f"{prompt[-60:]!r} is not a prefix of the rendering with the reply"
            )
    return None


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an assistant turn: eos plus any single-token turn end in the vocabulary.

    Generation (eval, serve) should stop on any of them; a fallback or model template may end a
    turn with `<end_of_turn>`/`<|im_end|>` rather than eos.
    """
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += [vocab[token] for token in _TURN_END_TOKENS if token in vocab]
    return list(dict.fromkeys(ids))


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Write the tokenizer with its chat template (chat_template.jinja) into `directory`."""
    if not tokenizer.chat_template:
        raise TuneforgeError("internal: save_tokenizer needs a tokenizer with a chat template set")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return directory


def load_saved_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer written by `save_tokenizer`, with the same template and pad token."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not (directory / "tokenizer_config.json").is_file():
        raise TuneforgeError(
            f"{directory}: no saved tokenizer here (tokenizer_config.json missing)"
        )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not tokenizer.chat_template:
        raise TuneforgeError(
            f"{directory}: the saved tokenizer has no chat template; it was not saved by tuneforge"
        )
    ensure_pad_token(tokenizer)
    return tokenizer
