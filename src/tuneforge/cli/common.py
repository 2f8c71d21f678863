"""What every verb shares: one way to report user errors (exit 2) and the consoles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tuneforge.errors import TuneforgeError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(fn: F) -> F:
    """Turn a TuneforgeError into one clear message on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TuneforgeError as exc:
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def plain_log(line: str) -> None:
    """Print a library's progress line as is (no rich markup or highlighting)."""
    console.print(line, highlight=False, markup=False)


def quiet_libraries() -> None:
    """Silence per-tensor progress bars and advisory warnings from the libraries we drive."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)
