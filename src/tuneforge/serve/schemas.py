"""Pydantic models of the OpenAI API subset `tuneforge serve` implements, requests and responses.

Requests forbid unknown fields, as OpenAI's API does ("Unrecognized request argument"), so a typo
or an unsupported feature fails loudly instead of being silently ignored. Fields the API defines
but we do not implement (tools, logprobs, penalties, n > 1, ...) are accepted only at their
neutral value and otherwise rejected with a 400 that names the parameter.

The one extension is the `tuneforge` object (the openai client sends it with `extra_body=`):

    {"tuneforge": {"constrain_to_labels": true}}

For a classification adapter (a run with data/labels.json) the answer is then always one of its
labels, and each choice carries `label_probabilities` ({label: probability}, summing to 1).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from tuneforge.config import StrictModel
from tuneforge.serve.errors import APIError, bad_request

MAX_STOP_SEQUENCES = 4


class _Request(StrictModel):
    """Requests: unknown fields, NaN/inf and booleans for numbers are 400s (see StrictModel)."""


def _encodable(text: str) -> str:
    """JSON can carry a lone UTF-16 surrogate ("\\ud800") that no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode"
        ) from None
    return text


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _valid_unicode(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        if isinstance(value, str):
            return _encodable(value)
        for part in value or []:
            _encodable(part.text)
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, str]:
        # "developer" is OpenAI's newer name for the system role; chat templates know "system".
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class TuneforgeOptions(_Request):
    constrain_to_labels: bool = False
    """Classification adapters: answer with a label and return every label's probability."""


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    """Parameters both endpoints share."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # what torch's generators accept
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    tuneforge: TuneforgeOptions = TuneforgeOptions()

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported; send several requests for several samples")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else list(value)
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("penalties are not supported by this server; leave them at 0")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported by this server")
        return value

    @property
    def stops(self) -> list[str]:
        return list(self.stop or [])  # the validator normalised a string to a list

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> ChatCompletionRequest:
        for name in ("logprobs", "top_logprobs", "tools", "tool_choice", "response_format"):
            value = getattr(self, name)
            if value not in (None, False) and not (name == "response_format" and _is_text(value)):
                raise _Unsupported(name)
        return self

    @property
    def token_limit(self) -> int | None:
        # max_completion_tokens is the newer name; either may be sent.
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # the completions API's documented default
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("send one prompt per request (a string, or a list of one string)")
            value = value[0]
        if not value:
            raise ValueError("the prompt is empty; send some text to continue")
        return _encodable(value)

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.echo:
            raise _Unsupported("echo")
        if self.suffix:
            raise _Unsupported("suffix")
        if self.logprobs is not None:
            raise _Unsupported("logprobs")
        if self.best_of not in (None, 1):
            raise _Unsupported("best_of")
        if self.tuneforge.constrain_to_labels:
            raise ValueError(
                "tuneforge.constrain_to_labels needs a chat prompt; use /v1/chat/completions"
            )
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class AdminLoadRequest(_Request):
    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    """A `tuneforge train` run directory on the server's disk."""


def _is_text(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


class _Unsupported(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"`{name}` is not supported by this server")
        self.param = name


def parse_request(cls: type[_Request], data: Any) -> Any:
    """Validate a decoded JSON body; an invalid one raises a 400 `APIError` naming the parameter."""
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


# pydantic names the member of a union it tried in the error's location ('content', 'str'):
# not a parameter a client can send.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|[\w-]+\[.*\])$")
_MEMBER_WORDS = {
    "str": "a string",
    "list[str]": "a list of strings",
    "list[TextPart]": 'a list of text parts ({"type": "text", "text": ...}; only text is supported)',
}


def _union_members(exc: ValidationError, field: list[str]) -> list[str]:
    """The union members pydantic tried for `field`: the tags right after it in the errors."""
    members = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if (
            loc[: len(field)] == field
            and len(loc) > len(field)
            and _UNION_MEMBER.match(loc[len(field)])
        ):
            members.append(loc[len(field)])
    return list(dict.fromkeys(members))


def _validation_error(exc: ValidationError) -> APIError:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    field = [part for part in loc if not _UNION_MEMBER.match(part)]
    param = ".".join(field) or None
    if len(field) < len(loc) and err["type"] != "missing":  # a value no member of a union took
        members = _union_members(exc, field)
        expected = " or ".join(_MEMBER_WORDS.get(m, m) for m in members)
        return bad_request(
            f"Invalid value for '{param}': expected {expected}", param=param, code="invalid_value"
        )
    if err["type"] == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param=param)
    if err["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param=param)
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _Unsupported):
        return bad_request(str(cause), param=cause.param, code="unsupported_parameter")
    message = str(err["msg"]).removeprefix("Value error, ")
    where = f"'{param}': " if param else ""
    return bad_request(f"Invalid value for {where}{message}", param=param, code="invalid_value")


# ---------------------------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None
    label_probabilities: dict[str, float] | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None
    label_probabilities: dict[str, float] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneforge"
    parent: str | None = None
    """For an adapter: the base model it runs on (None for the base itself)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
