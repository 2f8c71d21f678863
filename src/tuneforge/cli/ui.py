"""`tuneforge ui [--runs DIR] [--port PORT] [--serve-url URL]`: the local dashboard."""

from __future__ import annotations

import typer

from tuneforge.cli.common import console, err_console, quiet_libraries, report_errors
from tuneforge.errors import TuneforgeError


@report_errors
def ui_command(
    runs: str = typer.Option(
        "runs", "--runs", help="The directory holding the run directories (`train -o DIR/NAME`)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8600, "--port", help="TCP port."),
    serve_url: str = typer.Option(
        None,
        "--serve-url",
        help="The playground talks to this running `tuneforge serve` (e.g. "
        "http://127.0.0.1:8000) instead of loading the models itself.",
    ),
    api_key: str = typer.Option(
        None,
        "--api-key",
        envvar="TUNEFORGE_API_KEY",
        help="The API key of --serve-url, if it has one. Also read from $TUNEFORGE_API_KEY.",
    ),
    device: str = typer.Option(
        "cpu", "--device", help="Where the playground runs the models it loads (cpu, cuda ...)."
    ),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """A web dashboard over your runs: curves, eval reports, comparisons, a playground."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        raise TuneforgeError(
            f"tuneforge ui needs {', '.join(missing)}: pip install 'tuneforge[serve]'"
        )
    from tuneforge.serve.server import serve
    from tuneforge.ui.app import LOOPBACK_HOSTS, check_runs_dir, create_app
    from tuneforge.ui.playground import LocalModels, RemoteModels

    root = check_runs_dir(runs)
    if not 0 <= port <= 65535:
        raise TuneforgeError(f"--port {port}: expected 0-65535")
    if serve_url is not None and not serve_url.startswith(("http://", "https://")):
        raise TuneforgeError(f"--serve-url {serve_url!r}: expected http://HOST:PORT")
    quiet_libraries()
    models = (
        RemoteModels(serve_url, api_key, root) if serve_url else LocalModels(root, device=device)
    )
    app = create_app(root, models, allowed_hosts=LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else None)
    if host not in (*LOOPBACK_HOSTS, "::1"):
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach this port can read "
            "your runs and use the playground"
        )
    shown = f"[{host}]" if ":" in host else host
    # soft_wrap: a URL broken over two lines cannot be clicked or copied.
    console.print(
        f"tuneforge ui: runs from {root} on http://{shown}:{port}/  (Ctrl-C to stop)",
        soft_wrap=True,
        highlight=False,
    )
    serve(app, host, port, log_level=log_level)
