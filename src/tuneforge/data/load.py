"""Read input files into `RawRecord`s with exact locations, and report every problem precisely.

File-level problems (the whole file is unusable) raise `DataError`; row-level problems are yielded
as `Problem`s in file order, so the caller decides whether to stop or to skip and log them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tuneforge.data.lines import Line, file_error, read_lines
from tuneforge.data.load_csv import read_csv
from tuneforge.data.load_table import read_hf, read_parquet
from tuneforge.data.records import DataError, Location, Problem, RawRecord, json_kind

CSV_EXTENSIONS = (".csv", ".tsv", ".tab")
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
SUPPORTED = (*CSV_EXTENSIONS, *JSONL_EXTENSIONS, ".json", ".parquet")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def read_records(path: str, *, max_line_bytes: int = 1_000_000) -> Iterator[RawRecord | Problem]:
    """Yield each record of `path` (a file or `hf:OWNER/NAME[:SPLIT]`), or a Problem in its place.

    Raises DataError (lazily, while iterating) when the whole file is unusable.
    """
    if path.startswith("hf:"):
        items = read_hf(path)
    else:
        ext = _check_path(path)
        if ext == ".parquet":
            items = read_parquet(path)
        elif ext == ".json":
            # No line limit: a minified JSON array is one long line by design.
            items = _read_json(path, read_lines(path, None, bom_ok=False))
        elif ext in JSONL_EXTENSIONS:
            items = _read_jsonl(path, read_lines(path, max_line_bytes, bom_ok=False))
        else:
            lines = read_lines(path, max_line_bytes, bom_ok=True)  # Excel writes a BOM
            items = read_csv(path, lines, ext != ".csv", max_line_bytes)
    empty = True
    for item in items:
        empty = False
        yield item
    if empty:
        what = "a header row but no rows below it" if path.lower().endswith(CSV_EXTENSIONS) else ""
        raise file_error(path, f"has {what or 'no rows'}; check that you passed the right file")


def _check_path(path: str) -> str:
    """Return the lower-case extension of an existing, supported file."""
    p = Path(path)
    if p.is_dir():
        found = sorted(f.name for f in p.iterdir() if f.suffix.lower() in SUPPORTED)[:5]
        inside = f" (it holds {', '.join(found)})" if found else ""
        raise file_error(
            path, f"is a directory{inside}; pass one data file, or hf:{path} to load the directory"
        )
    if not p.exists():
        raise file_error(path, f"does not exist (looked in {os.getcwd()}); check the path")
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise file_error(
            path,
            f"has an unsupported extension '{p.suffix or '(none)'}'; supported: "
            f"{', '.join(SUPPORTED)}, or hf:OWNER/NAME[:SPLIT] for a Hugging Face dataset "
            "(export spreadsheets as CSV)",
        )
    return ext


# ---------------------------------------------------------------- JSON Lines and JSON


def _read_jsonl(path: str, lines: Iterable[Line]) -> Iterator[RawRecord | Problem]:
    for line in lines:
        if line.problem:
            yield line.problem
        elif line.text.strip():  # blank lines are skipped, but still counted
            yield _parse_json_line(path, line)


TOO_DEEP = "malformed JSON: nested too deeply to read"


def _parse_json_line(path: str, line: Line) -> RawRecord | Problem:
    where = Location(path, line.number)
    text = line.text.rstrip("\r\n")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return Problem(where, f"{_json_error(e, 'line')}; fix or remove the line", raw=text)
    except RecursionError:
        return Problem(where, f"{TOO_DEEP}; fix or remove the line", raw=text[:200])
    if not isinstance(value, dict):
        message = f"expected a JSON object, found {json_kind(value)}; each line must be one {{...}}"
        return Problem(where, message, raw=text)
    return RawRecord(value, where)


def _json_error(e: json.JSONDecodeError, unit: str) -> str:
    where = f"malformed JSON: {e.msg.removesuffix(' at')} at column {e.colno}"
    return where + _json_hint(e, unit)


def _json_hint(e: json.JSONDecodeError, unit: str) -> str:
    if e.pos >= len(e.doc.rstrip()) or e.msg.startswith("Unterminated string"):
        return f" (a truncated {unit}?)"
    if e.msg == "Extra data":
        return " (more than one value where one was expected?)"
    if e.doc[e.pos] in ",]}":
        return " (a trailing or doubled comma?)"
    if e.msg.startswith("Expecting property name") or e.doc[e.pos] == "'":
        return " (single quotes? JSON needs double quotes)"
    if e.msg.startswith("Invalid control character"):
        return r" (a raw newline or tab inside a string? write it as \n or \t)"
    return ""


def _read_json(path: str, lines: Iterable[Line]) -> Iterator[RawRecord | Problem]:
    lines = list(lines)
    text = "".join(line.text for line in lines)
    start = _JSON_SPACE.match(text).end()
    if text.startswith("[", start):
        yield from _read_json_array(path, text, start, lines)
        return
    try:
        value = json.loads(text)
    except RecursionError:
        raise file_error(path, f"{TOO_DEEP}; records are flat objects") from None
    except json.JSONDecodeError as e:
        # Not one JSON value: JSON Lines saved as .json reads fine line by line.
        first = next((line for line in lines if line.text.strip()), None)
        if first and not first.problem and isinstance(_parse_json_line(path, first), RawRecord):
            yield from _read_jsonl(path, lines)
            return
        raise _json_file_error(path, e) from None
    what = json_kind(value)
    if isinstance(value, dict):
        what = "a single JSON object"
        lists = [
            k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        ]
        what += f" (are the records its '{lists[0]}' list? save that list alone)" if lists else ""
    raise file_error(
        path,
        f"holds {what}, not a list of records; "
        "use a JSON array [{...}, {...}] or JSON Lines (.jsonl, one object per line)",
    )


def _read_json_array(
    path: str, text: str, start: int, lines: list[Line]
) -> Iterator[RawRecord | Problem]:
    # raw_decode element by element gives each element's exact start offset, hence its line.
    decoder = json.JSONDecoder()
    bad = {line.number: line.problem for line in lines if line.problem}
    line_no, counted = 1, 0
    pos = _JSON_SPACE.match(text, start + 1).end()
    closed = text.startswith("]", pos)  # an empty array
    while not closed:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise _json_file_error(path, e) from None
        except RecursionError:
            raise file_error(path, f"{TOO_DEEP}; records are flat objects") from None
        line_no += text.count("\n", counted, pos)
        counted = pos
        last_line = line_no + text.count("\n", pos, end)
        span = range(line_no, last_line + 1) if bad else range(0)
        problem = next((bad[n] for n in span if n in bad), None)
        if problem:
            yield problem
        elif isinstance(value, dict):
            yield RawRecord(value, Location(path, line_no))
        else:
            message = (
                f"expected a JSON object, found {json_kind(value)}; make every element {{...}}"
            )
            yield Problem(Location(path, line_no), message, raw=value)
        pos = _JSON_SPACE.match(text, end).end()
        closed = text.startswith("]", pos)
        if not closed and not text.startswith(",", pos):
            err = json.JSONDecodeError("Expecting ',' delimiter or ']'", text, pos)
            raise _json_file_error(path, err)
        if not closed:
            pos = _JSON_SPACE.match(text, pos + 1).end()
    pos = _JSON_SPACE.match(text, pos + 1).end()
    if pos < len(text):
        raise _json_file_error(path, json.JSONDecodeError("Extra data", text, pos))


def _json_file_error(path: str, e: json.JSONDecodeError) -> DataError:
    advice = f"fix the file there (`python -m json.tool {path}` points at the same spot)"
    return file_error(path, f"{_json_error(e, 'file')}; {advice}", e.lineno)
