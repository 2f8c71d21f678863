"""Requests -> prompt token ids, and the token budget against the model's context.

Chat prompts are rendered with the chat template of the model they go to: an adapter's comes
from its run directory (the template it was trained with), the base's from the base. The
tokenization happens on the API's thread, so the engine only ever runs the model.
"""

from __future__ import annotations

from typing import Any

from tuneforge.serve.errors import APIError, bad_request


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The conversation rendered by the chat template with the assistant's turn opened."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja's TemplateError: e.g. a template that rejects a role order
        raise bad_request(
            f"the model's chat template cannot render these messages: {exc}", param="messages"
        ) from None
    # The template writes any special tokens (bos) itself.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def completion_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    return list(tokenizer(prompt)["input_ids"])


def token_budget(
    prompt_tokens: int,
    requested: int | None,
    context_length: int,
    default_max_tokens: int,
    *,
    param: str,
) -> int:
    """max_tokens for the request: as requested, else the default, within the context.

    A prompt that leaves no room, or a request for more tokens than fit, is a 400 with code
    `context_length_exceeded`, as OpenAI reports it.
    """
    room = context_length - prompt_tokens
    if room < 1 or (requested is not None and requested > room):
        asked = requested if requested is not None else 1
        raise APIError(
            400,
            f"This model's maximum context length is {context_length} tokens. However, you "
            f"requested {prompt_tokens + asked} tokens ({prompt_tokens} in the {param}, {asked} "
            "in the completion). Please reduce the length of the "
            f"{param} or completion.",
            param=param,
            code="context_length_exceeded",
        )
    return requested if requested is not None else min(default_max_tokens, room)
