"""Bytes to decoded lines for the text readers, with the file-level checks they share.

Rejects empty, binary, wide-encoded and mostly-not-UTF-8 files as a whole (`DataError`); marks
single undecodable or over-long lines with a `Problem` so the reader can report them in place.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tuneforge.data.records import DataError, Location, Problem

_ENCODING_SAMPLE = 1000  # lines checked to tell "a few bad lines" from "the file is not UTF-8"
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_BINARY_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (zcat {path} > {out})"),
    (b"PK\x03\x04", "a zip archive (or an Excel .xlsx)", "unzip it, or export the sheet as CSV"),
    (b"PAR1", "a Parquet file", "rename it to .parquet"),
)


class Line(NamedTuple):
    number: int  # 1-based physical line
    text: str  # decoded, line ending kept; undecodable bytes replaced; "\n" for an over-long line
    problem: Problem | None = None  # why the line cannot be used
    bad_utf8: bool = False


def file_error(path: str, message: str, line: int | None = None) -> DataError:
    return DataError([Problem(Location(path, line), message)])


def read_lines(path: str, max_line_bytes: int | None, *, bom_ok: bool) -> Iterator[Line]:
    try:
        with open(path, "rb") as f:
            _check_start(path, f, bom_ok)
            lines = _split_lines(path, f, max_line_bytes)
            head = list(itertools.islice(lines, _ENCODING_SAMPLE))
            _check_encoding(path, head)
            yield from head
            yield from lines
    except OSError as e:
        raise file_error(path, f"could not be read ({e.strerror}); check its permissions") from e


def _check_start(path: str, f: Any, bom_ok: bool) -> None:
    """Reject empty, wide-encoded and binary files; leave `f` just after an accepted BOM."""
    head = f.read(4096)
    for magic, what, fix in _BINARY_MAGIC:
        if head.startswith(magic):
            fix = fix.format(path=path, out=_renamed(path, "unpacked"))
            raise file_error(path, f"is {what}, not UTF-8 text; {fix}")
    wide = next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)
    if not wide and head.count(0) * 4 >= len(head) > 1:  # ASCII in UTF-16 is half zero bytes
        wide = "UTF-16LE" if head[1] == 0 else "UTF-16BE"  # no BOM: name the byte order
    if wide:
        raise file_error(
            path,
            f"is {wide} encoded; re-save it as UTF-8 "
            f"(e.g. iconv -f {wide} -t UTF-8 {path} > {_renamed(path, 'utf8')})",
        )
    start = 0
    if head.startswith(codecs.BOM_UTF8):
        if not bom_ok:
            raise file_error(
                path,
                "starts with a UTF-8 byte-order mark (BOM), which JSON does not allow; remove it "
                f"(e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}) or save as UTF-8 without BOM",
            )
        start = len(codecs.BOM_UTF8)
    if not head[start:].strip() and _rest_is_blank(f):
        raise file_error(path, "is empty; check that you passed the right file")
    f.seek(start)


def _rest_is_blank(f: Any) -> bool:
    return not any(chunk.strip() for chunk in iter(lambda: f.read(1 << 20), b""))


def _split_lines(path: str, f: Any, limit: int | None) -> Iterator[Line]:
    for number in itertools.count(1):
        # readline(limit + 1) never holds more than the limit in memory, however long the line.
        chunk = f.readline() if limit is None else f.readline(limit + 1)
        if not chunk:
            return
        if limit is not None and len(chunk) > limit and not chunk.endswith(b"\n"):
            yield _too_long(path, number, chunk, f, limit)
            continue
        try:
            yield Line(number, chunk.decode("utf-8"))
        except UnicodeDecodeError as e:
            byte, column = chunk[e.start], len(chunk[: e.start].decode("utf-8")) + 1
            # Bytes 0x80-0x9F are printable only in Windows-1252 (smart quotes, euro sign).
            source = "cp1252" if 0x80 <= byte <= 0x9F else "latin1"
            message = (
                f"not valid UTF-8 (byte 0x{byte:02X} at column {column}); the file looks "
                f"Latin-1/Windows-1252 encoded: convert it with "
                f"`iconv -f {source} -t utf-8 {path} > {_renamed(path, 'utf8')}`"
            )
            text = chunk.decode("utf-8", errors="replace")
            problem = Problem(Location(path, number), message, raw=text.rstrip("\r\n"))
            yield Line(number, text, problem, bad_utf8=True)


def _too_long(path: str, number: int, first: bytes, f: Any, limit: int) -> Line:
    size, chunk = len(first), first
    while not chunk.endswith(b"\n"):  # skip the rest of the line without keeping it
        chunk = f.readline(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    size -= len(chunk) - len(chunk.rstrip(b"\r\n"))
    message = (
        f"line is {human_size(size)}, over the {human_size(limit)} limit (--max-line-bytes); "
        "shorten or split it, or raise --max-line-bytes"
    )
    raw = first[:800].decode("utf-8", errors="replace")[:200] + "…"
    return Line(number, "\n", Problem(Location(path, number), message, raw=raw))


def _check_encoding(path: str, head: list[Line]) -> None:
    """Many bad lines mean the whole file is in another encoding: one error, not thousands."""
    bad = [line for line in head if line.bad_utf8]
    used = [line for line in head if line.problem or line.text.strip()]
    if bad and len(bad) * 2 > len(used):
        first = bad[0]
        raise file_error(
            path,
            f"is not UTF-8: {len(bad)} of the first {len(used)} lines fail; "
            f"line {first.number} is {first.problem.message if first.problem else ''}",
        )


def _renamed(path: str, tag: str) -> str:
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{tag}{p.suffix}"))


def human_size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"
