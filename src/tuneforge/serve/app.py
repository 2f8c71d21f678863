"""The HTTP API: OpenAI-compatible routes, auth, body limits and errors, on FastAPI.

Routes: POST /v1/chat/completions and /v1/completions (plain JSON, or SSE with `stream`),
GET /v1/models[/{id}], GET /health, GET /metrics (Prometheus), and the admin routes
GET|POST /admin/adapters, DELETE /admin/adapters/{name}.

With an API key, every route but /health needs `Authorization: Bearer KEY`; the admin routes
need a key to exist at all (without one they are disabled, so an open server cannot be made to
read arbitrary directories). Bodies are read by hand, so a body over the limit is refused while
it is still arriving (413) and malformed JSON gets OpenAI's 400 rather than FastAPI's 422.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge import __version__
from tuneforge.errors import TuneforgeError
from tuneforge.serve import schemas as s
from tuneforge.serve.errors import APIError, bad_request, model_not_found
from tuneforge.serve.jobs import Done, Job, JobEvents, SamplingParams
from tuneforge.serve.metrics import CONTENT_TYPE, Metrics
from tuneforge.serve.prompts import chat_prompt_ids, completion_prompt_ids, token_budget
from tuneforge.serve.registry import AdapterCatalog, AdapterSpec, Target
from tuneforge.serve.responses import ChatFormat, TextFormat, sse

DEFAULT_MAX_BODY_BYTES = 1 << 20


class ServingEngine(Protocol):
    """What the API needs from an engine (`engine.BatchingEngine`, `vllm_engine.VllmEngine`)."""

    name: str
    context_length: int
    metrics: Metrics

    def start(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def healthy(self) -> bool: ...
    def submit(self, job: Job) -> None: ...
    def incoming(self) -> AbstractContextManager[None]: ...
    def load_adapter(self, name: str, path: str) -> AdapterSpec: ...
    def unload_adapter(self, name: str) -> None: ...
    def resident(self) -> list[str]: ...


def create_app(
    engine: ServingEngine,
    registry: AdapterCatalog,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    default_max_tokens: int = 256,
) -> FastAPI:
    """The ASGI app serving `registry`'s models through `engine` (started/stopped with the app)."""
    metrics = engine.metrics
    started = int(time.time())
    api_key = api_key or None  # an empty key would lock every client out

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop)

    app = FastAPI(title="tuneforge serve", version=__version__, lifespan=lifespan)
    app.add_middleware(_Observe, metrics=metrics)
    _install_error_handlers(app)

    # async: FastAPI would run a plain function in its thread pool, a hop per request.
    async def require_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
                code="missing_api_key",
            )
        if not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def require_admin(request: Request) -> None:
        if api_key is None:
            raise APIError(
                403,
                "The admin routes are disabled: start the server with --api-key to use them.",
                type="permission_error",
                code="admin_disabled",
            )
        await require_key(request)

    auth = [Depends(require_key)]
    admin = [Depends(require_admin)]

    # -- generation --------------------------------------------------------------------------

    def submit(
        target: Target,
        prompt: list[int],
        req: Any,
        param: str,
        constrain: bool = False,
    ) -> Job:
        # A constrained answer is one of the labels: the longest must fit after the prompt.
        wanted = (
            target.adapter.label_set.longest if constrain and target.adapter else req.token_limit
        )
        max_tokens = token_budget(
            len(prompt), wanted, engine.context_length, default_max_tokens, param=param
        )
        params = SamplingParams(max_tokens, req.temperature, req.top_p, tuple(req.stops), req.seed)
        job = Job(
            target, prompt, params, JobEvents(), stream=req.stream, constrain_to_labels=constrain
        )
        engine.submit(job)
        return job

    async def finish(job: Job) -> Done:
        try:
            return await job.events.result()
        finally:
            job.cancelled = True  # a no-op when done; stops the work if the client went away

    async def chat_job(request: Request) -> tuple[Job, ChatFormat, Any]:
        req = s.parse_request(s.ChatCompletionRequest, await _read_json(request, max_body_bytes))
        target = registry.resolve(req.model)
        request.state.model = target.name
        constrain = req.tuneforge.constrain_to_labels
        if constrain and target.labels is None:
            raise bad_request(
                f"model {target.name!r} has no label set (it is not a classification run), so "
                "its answers cannot be constrained to labels",
                param="tuneforge.constrain_to_labels",
            )
        prompt = chat_prompt_ids(target.tokenizer, [m.for_template() for m in req.messages])
        job = submit(target, prompt, req, "messages", constrain)
        return job, ChatFormat(target.name, len(prompt)), req

    async def completion_job(request: Request) -> tuple[Job, ChatFormat, Any]:
        req = s.parse_request(s.CompletionRequest, await _read_json(request, max_body_bytes))
        target = registry.resolve(req.model)
        request.state.model = target.name
        prompt = completion_prompt_ids(target.tokenizer, req.prompt)
        job = submit(target, prompt, req, "prompt")
        return job, TextFormat(target.name, len(prompt)), req

    async def respond(request: Request, make_job: Any) -> Any:
        with engine.incoming():  # the batch being formed waits for this request
            job, fmt, req = await make_job(request)
        if req.stream:
            return sse(job, fmt, req.include_usage)
        return fmt.response(await finish(job))

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> Any:
        return await respond(request, chat_job)

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request) -> Any:
        return await respond(request, completion_job)

    # -- models, health, metrics ---------------------------------------------------------------

    def cards() -> list[s.ModelCard]:
        base = registry.base.id
        return [s.ModelCard(id=base, created=started)] + [
            s.ModelCard(id=spec.name, created=started, parent=base) for spec in registry.adapters()
        ]

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> Any:
        return s.ModelList(data=cards()).model_dump()

    @app.get("/v1/models/{model_id:path}", dependencies=auth)
    async def get_model(model_id: str) -> Any:
        for card in cards():
            if card.id == model_id:
                return card.model_dump()
        raise model_not_found(model_id)

    @app.get("/health")
    async def health() -> Any:
        if not engine.healthy:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", dependencies=auth)
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    # -- admin ---------------------------------------------------------------------------------

    def describe(spec: AdapterSpec) -> dict[str, Any]:
        return {
            "name": spec.name,
            "path": str(spec.path),
            "method": spec.method,
            "labels": spec.labels,
            "resident": spec.name in engine.resident(),
        }

    @app.get("/admin/adapters", dependencies=admin)
    async def admin_list() -> Any:
        return {"object": "list", "data": [describe(spec) for spec in registry.adapters()]}

    @app.post("/admin/adapters", dependencies=admin, status_code=201)
    async def admin_load(request: Request) -> Any:
        req = s.parse_request(s.AdminLoadRequest, await _read_json(request, max_body_bytes))
        if registry.get(req.name) is not None:
            raise APIError(
                409, f"adapter {req.name!r} is already loaded; DELETE it first", param="name"
            )
        spec = await run_in_threadpool(engine.load_adapter, req.name, req.path)
        return describe(spec)

    @app.delete("/admin/adapters/{name}", dependencies=admin)
    async def admin_unload(name: str) -> Any:
        await run_in_threadpool(engine.unload_adapter, name)
        return {"name": name, "unloaded": True}

    return app


# ---------------------------------------------------------------------------------------------
# bodies, responses, streaming
# ---------------------------------------------------------------------------------------------


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON; over `limit` bytes is a 413 (checked before and while reading)."""
    too_large = APIError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes.",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(
            f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from None
    except RecursionError:
        raise bad_request(
            "The JSON body of your request is nested too deeply to parse.", code="invalid_json"
        ) from None


# ---------------------------------------------------------------------------------------------
# errors and metrics
# ---------------------------------------------------------------------------------------------


def _error_response(error: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(TuneforgeError)
    async def _user_error(_: Request, exc: TuneforgeError) -> JSONResponse:
        return _error_response(bad_request(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(bad_request(f"Invalid request: {exc.errors()[0].get('msg')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        code = kinds.get(exc.status_code)
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = "Unknown route; see /v1/chat/completions, /v1/completions, /v1/models."
        return _error_response(APIError(exc.status_code, message, code=code))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, APIError):  # pragma: no cover - handled above
            return _error_response(exc)
        return _error_response(
            APIError(500, f"internal error: {type(exc).__name__}", type="server_error")
        )


class _Observe:
    """ASGI middleware: count requests and time them to the last byte (streams included)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            model = str(scope.get("state", {}).get("model", ""))
            self.metrics.requests.inc(route=route, model=model, status=str(status))
            self.metrics.request_seconds.observe(time.perf_counter() - started, route=route)
