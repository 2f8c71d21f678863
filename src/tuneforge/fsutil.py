"""Atomic outputs and file hashing, shared by every stage that writes a directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tuneforge.errors import TuneforgeError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_output_dir(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()
) -> None:
    """Refuse, before any work, an output directory that cannot or must not be written.

    Writing replaces `target` as a whole (with `overwrite`, an existing one is deleted), so it
    must not be the current directory or one above it, nor be or hold any of `inputs` (the
    files and directories the command reads); and its parent must be creatable and writable.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise TuneforgeError(f"{target}: exists and is not a directory; choose another output path")
    if target.exists() and not overwrite:
        raise TuneforgeError(
            f"{target}: already exists; choose another output directory or pass --force to replace it"
        )
    resolved = target.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise TuneforgeError(
            f"{target}: is the current directory or one above it, which writing the output would "
            "replace; name a new directory, e.g. -o out"
        )
    for item in inputs:
        source = Path(item).resolve()
        if source == resolved or resolved in source.parents:
            raise TuneforgeError(
                f"{target}: holds the input {item}, which replacing the directory would delete; "
                "choose another output directory"
            )
    _check_creatable(target, resolved.parent)


def _check_creatable(target: Path, parent: Path) -> None:
    """The output is built in a temp directory beside it: try to create one in `parent`."""
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TuneforgeError(f"{target}: cannot be created: {existing} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tuneforge-probe-", dir=existing))
    except OSError as exc:
        raise TuneforgeError(
            f"{target}: cannot be created ({exc.strerror or exc}); choose a writable location"
        ) from None


@contextlib.contextmanager
def atomic_directory(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temp directory beside `target`; rename it into place only if the block succeeds.

    A failure (or Ctrl-C) leaves nothing behind: neither a half-written `target` nor the temp dir.
    `check_output_dir` runs first (callers with long work call it themselves, earlier, too).
    """
    target = Path(target)
    check_output_dir(target, overwrite=overwrite, inputs=inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file through a temp name and rename, so readers never see half of it."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise TuneforgeError(
            f"{path}: cannot be written ({exc.strerror or exc}); choose a writable location"
        ) from None
