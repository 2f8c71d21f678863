"""`tuneforge serve --base MODEL --adapter NAME=RUN_DIR ... [--host] [--port] [--api-key KEY]`."""

from __future__ import annotations

import ipaddress

import typer

from tuneforge.cli.common import console, err_console, quiet_libraries, report_errors
from tuneforge.errors import TuneforgeError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@report_errors
def serve_command(
    base: str = typer.Option(
        "smollm2-135m",
        "--base",
        help="The base model: a packaged name, an HF directory (a full fine-tune's run "
        "directory works), a .gguf file or a hub id.",
    ),
    adapter: list[str] = typer.Option(
        None,
        "--adapter",
        help="NAME=RUN_DIR: a LoRA/DoRA run of `tuneforge train` on this base, served as model "
        "NAME. Repeatable; loaded on first use.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(
        None,
        "--api-key",
        envvar="TUNEFORGE_API_KEY",
        help="Require `Authorization: Bearer KEY` on every route but /health; also enables the "
        "admin routes. Also read from $TUNEFORGE_API_KEY.",
    ),
    name: str = typer.Option(
        None, "--name", help="The base model's id in the API (default: from --base)."
    ),
    engine: str = typer.Option("hf", "--engine", help="hf (transformers + PEFT) or vllm (CUDA)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    max_adapters: int = typer.Option(
        8, "--max-adapters", help="Adapters held in memory; the least recently used is evicted."
    ),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="Requests per batch."),
    batch_wait_ms: float = typer.Option(
        5.0,
        "--batch-wait-ms",
        help="A batch closes when no request came for this long (at most 10x in all).",
    ),
    max_queue: int = typer.Option(
        1024, "--max-queue", help="Requests waiting beyond this get a 503."
    ),
    max_tokens: int = typer.Option(
        256, "--max-tokens", help="Tokens generated when a request sets no max_tokens."
    ),
    max_body_bytes: int = typer.Option(
        1 << 20, "--max-body-bytes", help="Larger request bodies get a 413."
    ),
    threads: int = typer.Option(
        None, "--threads", help="CPU threads for torch (default: torch's choice)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve a base model and its adapters behind an OpenAI-compatible API."""
    from tuneforge.serve.server import build_engine, parse_adapters, serve

    if engine not in ("hf", "vllm"):
        raise TuneforgeError(f"--engine {engine!r}: expected hf or vllm")
    for option, value in (("--max-tokens", max_tokens), ("--max-body-bytes", max_body_bytes)):
        if value < 1:
            raise TuneforgeError(f"{option} must be at least 1 (got {value})")
    if not 0 <= port <= 65535:
        raise TuneforgeError(f"--port {port}: expected 0-65535")
    adapters = parse_adapters(adapter or [])
    quiet_libraries()
    if threads:
        import torch

        torch.set_num_threads(threads)
    built = build_engine(
        base,
        adapters,
        engine=engine,  # type: ignore[arg-type]
        device=device,
        dtype=dtype,
        name=name,
        max_adapters=max_adapters,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
    )
    from tuneforge.serve.app import create_app

    app = create_app(
        built,
        built.catalog,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        default_max_tokens=max_tokens,
    )
    if not api_key and not _is_loopback(host):
        err_console.print(
            f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach "
            "this port can use the models"
        )
    models = ", ".join([built.catalog.base.id] + [spec.name for spec in built.catalog.adapters()])
    console.print(f"serving {models} ({built.name} engine) on http://{host}:{port}/v1")
    serve(app, host, port, log_level=log_level)
