"""The dashboard's FastAPI app: server-rendered pages over a runs directory.

Routes:
    GET  /                              runs list (?sort=KEY&desc=0|1)
    GET  /runs/{name}                   a run: curves, eval report, manifest, config
    GET  /runs/{name}/file/{path}       a run's figure or report (loss.png, eval/*.png|html|md)
    GET  /compare?run=a&run=b           runs side by side (also ?runs=a,b)
    GET  /compare/summary/{name}        a `tuneforge compare` output directory
    GET  /playground[?adapter=NAME]     base vs adapter, one prompt
    POST /api/chat                      the playground's call: {adapter, target, prompt, ...}
    GET  /api/runs                      the runs list as JSON

The directory is read on every request (cheap: metrics files are cached by mtime), so new runs
and fresh evals appear on reload. Names in URLs are checked to be direct children of the runs
directory; anything else is a 404.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge import __version__
from tuneforge.errors import TuneforgeError
from tuneforge.ui import assets, charts, templates
from tuneforge.ui.compare import comparison, read_summary, render_json, sections
from tuneforge.ui.evalview import eval_fragment
from tuneforge.ui.playground import (
    LocalModels,
    Models,
    PlaygroundError,
    chat_messages,
    chat_options,
)
from tuneforge.ui.runs import (
    NotFound,
    RunDetail,
    Scan,
    is_compare_dir,
    read_run,
    resolve_child,
    scan,
    sort_runs,
)

# Files a run page links to; anything else under a run directory is not served.
_FILE = re.compile(r"(?:loss\.png|eval/[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:png|svg|html|md|json))")
_SUMMARY_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:png|svg)")
MAX_COMPARED = 10
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
LIVE_SECONDS = 300
REFRESH_SECONDS = 10
CHART_WIDTH = 580  # two charts side by side in the 1240-pixel page


def check_runs_dir(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise TuneforgeError(
            f"--runs {path}: no such directory; point it at the parent of your run directories "
            "(e.g. runs/, where `tuneforge train ... -o runs/NAME` wrote them)"
        )
    if not path.is_dir():
        raise TuneforgeError(f"--runs {path}: not a directory")
    return path.resolve()


def runs_root(path: Path) -> tuple[Path, Path | None]:
    """(the directory whose children are runs, a `tuneforge compare` output directory or None).

    `--runs OUT` where OUT is a `tuneforge compare` output means its runs (OUT/runs/NAME) and its
    summary; any other directory is taken as the parent of runs.
    """
    if is_compare_dir(path) and (path / "runs").is_dir():
        return path / "runs", path
    return path, None


def create_app(
    runs_dir: str | Path,
    models: Models | None = None,
    *,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The dashboard over `runs_dir`; the playground uses `models` (default: `LocalModels`).

    `allowed_hosts`: the Host headers accepted (others get a 400). `tuneforge ui` on a loopback
    address allows only loopback names, so a web page cannot reach the dashboard through a
    rebound DNS name.
    """
    root, own_summary = runs_root(check_runs_dir(runs_dir))
    backend: Models = models if models is not None else LocalModels(root)

    def summaries(found: Scan) -> dict[str, Path]:
        """Comparison summaries by name: compare outputs among the runs, and `--runs` itself."""
        named = {name: root / name for name in found.compares}
        if own_summary is not None:
            named[own_summary.name] = own_summary
        return named

    env = templates.environment()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(backend.close)

    app = FastAPI(title="tuneforge ui", version=__version__, lifespan=lifespan, docs_url=None)
    app.state.models = backend
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(root=str(root), **context)
        return HTMLResponse(html, status_code=status)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> HTMLResponse:
        return page("error", 404, page="", title="Not found", message=str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> HTMLResponse:
        title = "Not found" if exc.status_code == 404 else f"Error {exc.status_code}"
        return page("error", exc.status_code, page="", title=title, message=str(exc.detail))

    # -- runs ----------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def runs_list(sort: str = "date", desc: str = "1") -> HTMLResponse:
        found = scan(root)
        return page(
            "runs",
            page="runs",
            runs=sort_runs(found.runs, sort, desc != "0"),
            sort=sort,
            desc=desc != "0",
            compares=list(summaries(found)),
            skipped=found.skipped,
        )

    @app.get("/api/runs")
    def runs_json() -> JSONResponse:
        found = scan(root)
        rows = [
            {**dataclasses.asdict(run), "path": str(run.path), "servable": run.servable}
            for run in found.runs
        ]
        return JSONResponse({"runs": rows, "compares": list(summaries(found))})

    @app.get("/runs/{name}", response_class=HTMLResponse)
    def run_page(name: str) -> HTMLResponse:
        detail = read_run(resolve_child(root, name))
        run = detail.summary
        curves = detail.curves
        loss_series = []
        lr_series = []
        if curves is not None:
            loss_series = [
                charts.Series("train", curves.train_loss),
                charts.Series("val", curves.val_loss, markers=True),
            ]
            lr_series = [charts.Series("", curves.lr, color="#2ca02c")]
        eval_html = None
        if detail.eval_results is not None:
            eval_html = eval_fragment(
                detail.eval_results,
                detail.eval_plots,
                lambda path: f"/runs/{quote(name)}/file/eval/{quote(path.name)}",
            )
        return page(
            "run",
            page="runs",
            d=detail,
            r=run,
            refresh=REFRESH_SECONDS if _in_progress(detail) else None,
            loss_chart=charts.line_chart(
                loss_series,
                title="loss",
                x_label="step",
                y_label="loss",
                chart_id="loss-chart",
                width=CHART_WIDTH,
            ),
            lr_chart=charts.line_chart(
                lr_series,
                title="learning rate",
                x_label="step",
                y_label="lr",
                chart_id="lr-chart",
                width=CHART_WIDTH,
            ),
            eval_html=eval_html,
            manifest_text=(
                json.dumps(detail.manifest, indent=2) if detail.manifest is not None else None
            ),
        )

    @app.get("/runs/{name}/file/{path:path}")
    def run_file(name: str, path: str) -> FileResponse:
        run = resolve_child(root, name)
        if not _FILE.fullmatch(path) or not (run / path).is_file():
            raise NotFound(f"{name}/{path}: no such figure or report")
        return FileResponse(run / path)

    # -- comparisons ---------------------------------------------------------------------------

    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request) -> HTMLResponse:
        names = _requested_runs(request)
        found = scan(root)
        notes: list[str] = []
        details: list[RunDetail] = []
        for name in names[:MAX_COMPARED]:
            try:
                details.append(read_run(resolve_child(root, name)))
            except NotFound as exc:
                notes.append(str(exc))
        if len(names) > MAX_COMPARED:
            notes.append(f"showing the first {MAX_COMPARED} of {len(names)} runs")
        context: dict[str, Any] = {}
        if len(details) >= 2:
            context = comparison(details, CHART_WIDTH)
        return page(
            "compare",
            page="compare",
            notes=notes,
            all_runs=[r.name for r in found.runs],
            selected=set(names),
            details=details,
            compares=list(summaries(found)),
            **context,
        )

    def summary_dir(name: str) -> Path:
        # Looked up by name among the known summaries: a URL cannot name any other directory.
        path = summaries(scan(root)).get(name)
        if path is None:
            raise NotFound(f"no `tuneforge compare` summary named {name!r} in {root}")
        return path

    @app.get("/compare/summary/{name}", response_class=HTMLResponse)
    def compare_summary(name: str) -> HTMLResponse:
        path = summary_dir(name)
        known = {r.name for r in scan(root).runs}
        summary = read_summary(path, known)

        def link(text: str) -> str | None:
            candidate = Path(text.rstrip("/")).name if "/" in text else text
            return f"/runs/{quote(candidate)}" if candidate in known else None

        verdict = summary.data.get("verdict") if isinstance(summary.data, dict) else None
        rest, tables = sections(summary.data)
        return page(
            "summary",
            page="compare",
            s=summary,
            verdict=verdict if isinstance(verdict, str) else None,
            tables=[(key, render_json(records, link)) for key, records in tables],
            data_html=render_json(rest, link),
            # A compare output among the runs keeps its own runs in OUT/runs, not listed here.
            elsewhere=path != own_summary and (path / "runs").is_dir(),
        )

    @app.get("/compare/summary/{name}/file/{filename}")
    def compare_summary_file(name: str, filename: str) -> FileResponse:
        path = summary_dir(name)
        if not _SUMMARY_FILE.fullmatch(filename) or not (path / filename).is_file():
            raise NotFound(f"{name}/{filename}: no such figure")
        return FileResponse(path / filename)

    # -- playground ----------------------------------------------------------------------------

    @app.get("/playground", response_class=HTMLResponse)
    async def playground(adapter: str | None = None) -> HTMLResponse:
        error = None
        try:
            choices = await backend.choices()
        except PlaygroundError as exc:
            choices, error = [], str(exc)
        return page(
            "playground",
            page="playground",
            choices=choices,
            selected=adapter,
            description=backend.description,
            error=error,
            script=Markup(assets.PLAYGROUND_JS),
        )

    @app.post("/api/chat")
    async def chat(request: Request) -> JSONResponse:
        # JSON only: a cross-site form or text/plain post (no CORS preflight) cannot drive the
        # models of a dashboard on localhost.
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send JSON (Content-Type: application/json)"}, 415)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        try:
            if not isinstance(body, dict):
                raise PlaygroundError("the body must be a JSON object")
            adapter, target = body.get("adapter"), body.get("target", "adapter")
            if not isinstance(adapter, str) or not adapter:
                raise PlaygroundError("choose an adapter")
            if target not in ("base", "adapter"):
                raise PlaygroundError("target: expected 'base' or 'adapter'")
            answer = await backend.chat(adapter, target, chat_messages(body), chat_options(body))
        except PlaygroundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except Exception as exc:  # e.g. a model that fails to load: say so in the pane
            message = f"the playground failed: {type(exc).__name__}: {str(exc)[:300]}"
            return JSONResponse({"error": message}, status_code=500)
        return JSONResponse({**answer, "target": target})

    @app.get("/favicon.ico")
    def favicon() -> RedirectResponse:
        # Browsers ask for it on every page; an empty data URI keeps the logs clean.
        return RedirectResponse("data:,", status_code=307)

    return app


def _in_progress(detail: RunDetail) -> bool:
    """No manifest yet and metrics written in the last few minutes: a training to follow live."""
    if detail.summary.status != "incomplete":
        return False
    try:
        age = time.time() - (detail.summary.path / "metrics.jsonl").stat().st_mtime
    except OSError:
        return False
    return age < LIVE_SECONDS


def _requested_runs(request: Request) -> list[str]:
    """Run names from ?run=a&run=b and/or ?runs=a,b, in order, without repeats."""
    names: list[str] = list(request.query_params.getlist("run"))
    for value in request.query_params.getlist("runs"):
        names += [part.strip() for part in value.split(",")]
    return list(dict.fromkeys(n for n in names if n))
