"""The playground's model access: always through the serve API (`/v1/chat/completions`).

Two backends with one interface:

- `RemoteModels`: a `tuneforge serve` already running (`tuneforge ui --serve-url URL`); the
  adapters are whatever it serves.
- `LocalModels` (the default): the serve app itself, built in this process on first use from the
  runs directory: the base model of the chosen run, and the LoRA-family runs on that base as
  adapters (registered one by one as they are picked). Requests reach it through httpx's ASGI
  transport, so they take exactly the path an HTTP client's would. One base is held at a time:
  picking a run on another base stops the engine and loads that one (a playground compares one
  adapter with its base; holding every base would multiply the memory for no gain).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuneforge.errors import TuneforgeError
from tuneforge.ui.runs import SERVABLE_METHODS, NotFound, RunSummary, resolve_child, scan

REQUEST_TIMEOUT_S = 600.0  # CPU generation with a 135M model can take a while; the UI waits
MAX_TOKENS_LIMIT = 1024


class PlaygroundError(Exception):
    """A request the playground cannot answer; the message is shown in the answer pane."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Choice:
    """An adapter the playground offers (or lists as unavailable, with the reason)."""

    name: str
    base: str | None
    reason: str | None = None
    system: str | None = None
    """The system prompt the run was trained with, to prefill the form."""
    example: str | None = None
    """A user message from the run's data, as a placeholder prompt."""


class Models(Protocol):
    description: str

    async def choices(self) -> list[Choice]: ...
    async def chat(
        self, adapter: str, target: str, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]: ...
    def close(self) -> None: ...


async def _post_chat(client: Any, model: str, messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """POST /v1/chat/completions; the answer, or PlaygroundError with the API's message."""
    import httpx

    body = {"model": model, "messages": messages, **options}
    started = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        raise PlaygroundError(f"the serve API did not answer: {exc}", 502) from None
    seconds = time.perf_counter() - started
    try:
        data = response.json()
    except ValueError:
        raise PlaygroundError(
            f"the serve API answered {response.status_code} with a body that is not JSON", 502
        ) from None
    if response.status_code != 200:
        message = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
        raise PlaygroundError(
            f"the serve API refused the request ({response.status_code}): {message or data}",
            response.status_code if response.status_code < 500 else 502,
        )
    try:
        choice = data["choices"][0]
        return {
            "text": choice["message"]["content"] or "",
            "finish_reason": choice.get("finish_reason"),
            "model": data.get("model", model),
            "completion_tokens": (data.get("usage") or {}).get("completion_tokens"),
            "prompt_tokens": (data.get("usage") or {}).get("prompt_tokens"),
            "seconds": round(seconds, 3),
        }
    except (KeyError, IndexError, TypeError):
        raise PlaygroundError("the serve API's answer has no choices[0].message", 502) from None


# ---------------------------------------------------------------------------------------------
# hints from the run's data
# ---------------------------------------------------------------------------------------------


def _first_row(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    return row if isinstance(row, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def data_hints(run: Path) -> tuple[str | None, str | None]:
    """(system prompt, example user message) from the run's prepared data, when still there.

    Prefilling the system prompt the adapter was trained with matters: without it a
    classification adapter sees a prompt unlike any it learned from.
    """
    from tuneforge.ui.readers import read_yaml

    config, _ = read_yaml(run / "config.yaml", [])
    data_dir = (config or {}).get("data", {}) or {}
    directory = data_dir.get("dir") if isinstance(data_dir, dict) else None
    if not isinstance(directory, str):
        return None, None
    for split in ("test.jsonl", "val.jsonl", "train.jsonl"):
        row = _first_row(Path(directory) / split)
        messages = row.get("messages") if row else None
        if not isinstance(messages, list) or not messages:
            continue
        valid = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
        system = next((m["content"] for m in valid if m.get("role") == "system"), None)
        user = next((m["content"] for m in valid if m.get("role") == "user"), None)
        return system, user
    return None, None


def _unavailable_reason(run: RunSummary) -> str | None:
    if run.servable:
        return None
    if run.weights is None:
        return "no trained weights yet"
    if run.weights == "full":
        return "a full fine-tune: serve it as a base (`tuneforge serve --base RUN`)"
    if run.method not in SERVABLE_METHODS:
        return f"a {run.method} adapter: serve supports {', '.join(SERVABLE_METHODS)}"
    return "its base model is unknown (config.yaml unreadable)"


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------


class RemoteModels:
    """A running `tuneforge serve` at `url`."""

    def __init__(self, url: str, api_key: str | None = None, runs_root: Path | None = None):

        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        self.description = f"the serve API at {self.url}"
        self.runs_root = runs_root
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._base: str | None = None

    def _client(self) -> Any:
        import httpx

        # A client per call: a pooled one is bound to the event loop that opened its sockets.
        return httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=REQUEST_TIMEOUT_S
        )

    async def _models(self) -> list[dict[str, Any]]:
        import httpx

        try:
            async with self._client() as client:
                response = await client.get("/v1/models")
            response.raise_for_status()
            data = response.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise PlaygroundError(f"cannot list the models of {self.url}/v1: {exc}", 502) from None
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def choices(self) -> list[Choice]:
        models = await self._models()
        bases = [m["id"] for m in models if not m.get("parent")]
        self._base = bases[0] if bases else None
        out = []
        for model in models:
            if not model.get("parent"):
                continue
            system = example = None
            if self.runs_root is not None:
                # Served adapters need not be runs of this directory.
                with contextlib.suppress(NotFound):
                    system, example = data_hints(resolve_child(self.runs_root, model["id"]))
            out.append(Choice(model["id"], model.get("parent"), None, system, example))
        return out

    async def chat(
        self, adapter: str, target: str, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        if self._base is None:
            await self.choices()
        if target == "base" and self._base is None:
            raise PlaygroundError(f"{self.url} serves no base model", 502)
        model = self._base if target == "base" else adapter
        async with self._client() as client:
            return await _post_chat(client, model, messages, options)

    def close(self) -> None:
        pass  # nothing held between calls


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._:-]")


def served_name(run_name: str) -> str:
    """The run's name as a serve adapter id (serve allows letters, digits and . _ - :)."""
    name = _SAFE_NAME.sub("-", run_name).lstrip("._:-")[:64]
    return name or "adapter"


class LocalModels:
    """The serve app in this process, over the runs in `root` (loaded on first use)."""

    def __init__(self, root: Path, *, device: str = "cpu") -> None:
        self.root = root
        self.device = device
        self.description = "the serve API, run inside this dashboard (the model loads on first use)"
        self._lock = threading.Lock()
        self._base_name: str | None = None
        self._engine: Any = None
        self._app: Any = None

    async def choices(self) -> list[Choice]:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self._choices)

    def _choices(self) -> list[Choice]:
        out = []
        for run in scan(self.root).runs:
            reason = _unavailable_reason(run)
            system, example = data_hints(run.path) if reason is None else (None, None)
            out.append(Choice(run.name, run.model, reason, system, example))
        return out

    def _ready(self, run_name: str) -> tuple[Any, str, str]:
        """(serve app, base id, adapter id) with the run's base loaded and the run registered."""
        from tuneforge.ui.runs import read_run

        try:
            run = read_run(resolve_child(self.root, run_name)).summary
        except NotFound as exc:
            raise PlaygroundError(str(exc), 404) from None
        reason = _unavailable_reason(run)
        if reason is not None:
            raise PlaygroundError(f"run {run_name!r} cannot be served: {reason}")
        assert run.model is not None
        with self._lock:
            if self._base_name != run.model:
                self._start(run.model)
            engine = self._engine
            name = served_name(run.name)
            if engine.catalog.get(name) is None:
                try:
                    engine.catalog.register(name, run.path)
                except TuneforgeError as exc:
                    raise PlaygroundError(str(exc)) from None
            return self._app, engine.catalog.base.id, name

    def _start(self, base: str) -> None:
        from tuneforge.serve.app import create_app
        from tuneforge.serve.server import build_engine

        self._stop()
        try:
            engine = build_engine(base, {}, device=self.device, max_batch_size=8)
        except TuneforgeError as exc:
            raise PlaygroundError(f"cannot load the base model {base!r}: {exc}") from None
        # ASGITransport does not run the app's lifespan, which is what starts the engine.
        engine.start()
        self._app = create_app(engine, engine.catalog)
        self._engine, self._base_name = engine, base

    def _stop(self) -> None:
        if self._engine is not None:
            self._engine.stop()
        self._engine = self._app = self._base_name = None

    async def chat(
        self, adapter: str, target: str, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        import httpx
        from starlette.concurrency import run_in_threadpool

        # Loading a model takes seconds: off the event loop, so other pages stay responsive.
        app, base_id, adapter_id = await run_in_threadpool(self._ready, adapter)
        model = base_id if target == "base" else adapter_id
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://tuneforge-serve",
            timeout=REQUEST_TIMEOUT_S,
        ) as client:
            return await _post_chat(client, model, messages, options)

    def close(self) -> None:
        with self._lock:
            self._stop()


def chat_options(body: dict[str, Any]) -> dict[str, Any]:
    """Sampling options from the playground form, checked (PlaygroundError names the field)."""
    options: dict[str, Any] = {}
    max_tokens = body.get("max_tokens", 128)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise PlaygroundError("max_tokens: expected a whole number")
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise PlaygroundError(f"max_tokens: expected 1 to {MAX_TOKENS_LIMIT}")
    options["max_tokens"] = max_tokens
    temperature = body.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise PlaygroundError("temperature: expected a number")
    if not 0 <= temperature <= 2:
        raise PlaygroundError("temperature: expected 0 to 2")
    options["temperature"] = float(temperature)
    if temperature > 0:
        options["seed"] = 0  # base and adapter draw the same random stream: a fair comparison
    return options


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PlaygroundError("type a prompt first")
    system = body.get("system")
    messages = []
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return messages
