"""Assemble a server: load the base, register the adapters, pick the engine, run uvicorn.

`build_engine` is what `tuneforge serve`, the tests and the load benchmark share; `serve` runs
the app under uvicorn; `background_server` runs it in a thread (the demo, the tests).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from tuneforge.errors import TuneforgeError
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.registry import AdapterCatalog, BaseInfo, base_identity

EngineKind = Literal["hf", "vllm"]


def served_id(name: str) -> str:
    """The id clients use for the base: a packaged or hub name as given, a path's last part."""
    path = Path(name).expanduser()
    return path.name if path.exists() else name


def context_length(model: Any, tokenizer: Any) -> int:
    """Tokens the model attends over: its position limit (the tokenizer's if that is smaller)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    return int(limit)


def parse_adapters(pairs: list[str]) -> dict[str, str]:
    """`NAME=RUN_DIR` arguments -> {name: run_dir}; duplicate names are an error."""
    adapters: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise TuneforgeError(
                f"--adapter {pair!r}: expected NAME=RUN_DIR, e.g. support=runs/lora"
            )
        if name.strip() in adapters:
            raise TuneforgeError(f"--adapter {name.strip()!r} is given twice")
        adapters[name.strip()] = path.strip()
    return adapters


def build_engine(
    base: str,
    adapters: Mapping[str, str | Path] | None = None,
    *,
    engine: EngineKind = "hf",
    device: str = "cpu",
    dtype: str = "auto",
    name: str | None = None,
    max_adapters: int = 8,
    max_batch_size: int = 16,
    batch_wait_ms: float = 5.0,
    max_queue: int = 1024,
    metrics: Metrics | None = None,
) -> Any:
    """Load `base`, register `adapters` ({name: run dir}, checked now, loaded on demand)."""
    metrics = metrics or Metrics()
    if engine == "vllm":
        from tuneforge.serve.vllm_engine import VllmEngine

        return VllmEngine.create(
            base,
            dict(adapters or {}),
            name=name,
            max_adapters=max_adapters,
            dtype=dtype,
            max_queue=max_queue,
            metrics=metrics,
        )
    if engine != "hf":
        raise TuneforgeError(f"--engine {engine!r}: expected hf or vllm")
    from tuneforge.config import ModelConfig
    from tuneforge.models.load import load_model
    from tuneforge.models.tokenizer import stop_token_ids
    from tuneforge.serve.engine import BatchingEngine
    from tuneforge.serve.resident import ResidentAdapters

    model, tokenizer, info = load_model(ModelConfig(name=base, dtype=dtype), device=device)
    catalog = AdapterCatalog(
        BaseInfo(
            id=name or served_id(base),
            identity=base_identity(info),
            tokenizer=tokenizer,
            context_length=context_length(model, tokenizer),
            stop_ids=frozenset(stop_token_ids(tokenizer)),
        )
    )
    for adapter_name, path in (adapters or {}).items():
        catalog.register(adapter_name, path)
    resident = ResidentAdapters(model, max_adapters, metrics)
    return BatchingEngine(
        catalog,
        resident,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
        metrics=metrics,
    )


def serve(app: Any, host: str, port: int, *, log_level: str = "info") -> None:
    """Run the app under uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port on `host` (held open, so no other process can take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def background_server(
    app: Any, *, host: str = "127.0.0.1", start_timeout: float = 30.0
) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of `host` in a thread; yields the base URL.

    The server is stopped (graceful shutdown, lifespan included) when the block ends.
    """
    import uvicorn

    sock = free_socket(host)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise TuneforgeError(f"the server on {host}:{port} did not start")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
