"""Entry point: `tuneforge VERB ...` and `python -m tuneforge VERB ...`."""

from __future__ import annotations

import typer

from tuneforge import __version__
from tuneforge.cli import compare as compare_cli
from tuneforge.cli import demo, eval, export, prepare, serve, train
from tuneforge.cli import estimate as estimate_cli
from tuneforge.cli import ui as ui_cli

app = typer.Typer(
    name="tuneforge",
    help="From raw examples to a fine-tuned, measured, served small language model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("prepare")(prepare.prepare_command)
app.command("train")(train.train_command)
app.command("eval")(eval.eval_command)
app.command("export")(export.export_command)
app.command("serve")(serve.serve_command)
app.command("demo")(demo.demo_command)
app.command("ui")(ui_cli.ui_command)
app.command("compare")(compare_cli.compare_command)
app.command("estimate")(estimate_cli.estimate_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tuneforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """tuneforge prepare -> train -> eval -> export -> serve."""


def main() -> None:
    app()
