"""A request as the engines see it (`Job`), and how results travel back to the API (`JobEvents`).

The API runs on an asyncio event loop; the transformers engine runs the model on a worker
thread. A job carries an asyncio queue bound to the request's loop, and the engine pushes events
onto it thread-safely (`loop.call_soon_threadsafe`): text deltas while generating, then exactly
one `Done` or `Failed`. Streaming responses forward the deltas as they come; plain responses
wait for `Done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from tuneforge.serve.errors import APIError
from tuneforge.serve.registry import Target

GREEDY_BELOW = 1e-6  # temperatures under this decode greedily


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    """0 (or below GREEDY_BELOW) means greedy decoding."""
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        # Dividing logits by a temperature this small overflows to inf (1e-300 made softmax
        # NaN); the distribution is the argmax's long before that.
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    text: str
    finish_reason: str
    """'stop' (turn end or a stop string) or 'length' (max_tokens reached)."""
    completion_tokens: int
    label_probabilities: dict[str, float] | None = None


@dataclass(frozen=True)
class Failed:
    error: APIError


Event = Delta | Done | Failed


class JobEvents:
    """A thread-safe channel from the engine to one request's coroutine."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.pushed = 0
        """Events sent so far (only the engine's thread pushes): 0 = the client saw nothing."""

    def push(self, event: Event) -> None:
        """Deliver `event` from any thread; dropped if the request's loop has closed."""
        self.pushed += 1
        # A closed loop means the client and its server are gone: nobody to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def next(self) -> Event:
        return await self._queue.get()

    async def result(self) -> Done:
        """Wait for the end of the job (ignoring deltas); a `Failed` raises its APIError."""
        while True:
            event = await self.next()
            if isinstance(event, Done):
                return event
            if isinstance(event, Failed):
                raise event.error


@dataclass
class Job:
    """One request: its target model, prompt tokens, sampling and where its events go."""

    target: Target
    prompt_ids: list[int]
    params: SamplingParams
    events: JobEvents
    stream: bool = False
    constrain_to_labels: bool = False
    cancelled: bool = False
    """Set by the API when the client went away; the engine stops spending compute on it."""
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def group_key(self) -> str:
        """Jobs with the same key can share one generate call."""
        adapter = self.target.adapter
        if self.constrain_to_labels:
            return f"classify:{adapter.key if adapter else 'base'}"
        if adapter is not None and not adapter.mixable:
            return f"single:{adapter.key}"
        return "mixed"
