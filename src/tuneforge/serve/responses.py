"""Response bodies for one request: plain JSON, or server-sent events for `stream: true`.

A stream is `data: {chunk}` lines -- the role first (chat), then one chunk per text delta, a
final chunk with `finish_reason`, an optional usage chunk (`stream_options.include_usage`) --
and `data: [DONE]`, which is what the official openai client's `stream=True` reads. An error
after the stream has started is sent as a `data: {"error": ...}` event, which that client
raises as an APIError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from tuneforge.serve import schemas as s
from tuneforge.serve.jobs import Delta, Done, Failed, Job

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dump(model: Any) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    for choice in data.get("choices", []):
        if choice.get("label_probabilities") is None:
            choice.pop("label_probabilities", None)  # only classification answers carry it
    return data


class ChatFormat:
    """chat.completion / chat.completion.chunk bodies for one request."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.id, self.created = s.new_id("chatcmpl"), s.now()
        self.model, self.prompt_tokens = model, prompt_tokens

    def response(self, done: Done) -> dict[str, Any]:
        choice = s.ChatChoice(
            message=s.AssistantMessage(content=done.text),
            finish_reason=done.finish_reason,  # type: ignore[arg-type]
            label_probabilities=done.label_probabilities,
        )
        usage = s.Usage.of(self.prompt_tokens, done.completion_tokens)
        return dump(
            s.ChatCompletion(
                id=self.id, created=self.created, model=self.model, choices=[choice], usage=usage
            )
        )

    def chunk(
        self, text: str | None, finish: str | None = None, probs: Any = None, first: bool = False
    ) -> dict[str, Any]:
        delta = s.ChunkDelta(role="assistant" if first else None, content=text)
        choice = s.ChunkChoice(delta=delta, finish_reason=finish, label_probabilities=probs)  # type: ignore[arg-type]
        return dump(
            s.ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=[choice]
            )
        )

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        usage = s.Usage.of(self.prompt_tokens, done.completion_tokens)
        chunk = s.ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[], usage=usage
        )
        return dump(chunk)


class TextFormat(ChatFormat):
    """text_completion bodies (the same stream for both: chunks are text_completion objects)."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        super().__init__(model, prompt_tokens)
        self.id = s.new_id("cmpl")

    def response(self, done: Done) -> dict[str, Any]:
        choice = s.CompletionChoice(text=done.text, finish_reason=done.finish_reason)  # type: ignore[arg-type]
        usage = s.Usage.of(self.prompt_tokens, done.completion_tokens)
        return dump(
            s.Completion(
                id=self.id, created=self.created, model=self.model, choices=[choice], usage=usage
            )
        )

    def chunk(
        self, text: str | None, finish: str | None = None, probs: Any = None, first: bool = False
    ) -> dict[str, Any]:
        choice = s.CompletionChoice(text=text or "", finish_reason=finish)  # type: ignore[arg-type]
        return dump(
            s.Completion(id=self.id, created=self.created, model=self.model, choices=[choice])
        )

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        usage = s.Usage.of(self.prompt_tokens, done.completion_tokens)
        return dump(
            s.Completion(
                id=self.id, created=self.created, model=self.model, choices=[], usage=usage
            )
        )


def sse(job: Job, fmt: ChatFormat, include_usage: bool) -> StreamingResponse:
    """Server-sent events: `data: {chunk}` per delta, a final chunk, then `data: [DONE]`."""

    def event(data: Any) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        sent = ""
        try:
            if not isinstance(fmt, TextFormat):  # chat streams open with the role
                yield event(fmt.chunk("", first=True))
            while True:
                item = await job.events.next()
                if isinstance(item, Delta):
                    sent += item.text
                    yield event(fmt.chunk(item.text))
                elif isinstance(item, Done):
                    rest = item.text[len(sent) :] if item.text.startswith(sent) else ""
                    if rest:
                        yield event(fmt.chunk(rest))
                    yield event(fmt.chunk(None, item.finish_reason, item.label_probabilities))
                    if include_usage:
                        yield event(fmt.usage_chunk(item))
                    break
                elif isinstance(item, Failed):
                    yield event(item.error.body())
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = True  # the client went away (or we are done): stop generating

    return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)
