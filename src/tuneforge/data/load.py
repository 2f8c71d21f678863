"""Read input files into `RawRecord`s with exact locations, and report every problem precisely.

File-level problems (the whole file is unusable) raise `DataError`; row-level problems are yielded
as `Problem`s in file order, so the caller decides whether to stop or to skip and log them.
"""

from __future__ import annotations

import base64
import codecs
import csv
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tuneforge.data.records import DataError, Location, Problem, RawRecord

CSV_EXTENSIONS = (".csv", ".tsv", ".tab")
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
SUPPORTED = (*CSV_EXTENSIONS, *JSONL_EXTENSIONS, ".json", ".parquet")
_ENCODING_SAMPLE = 1000  # lines checked to tell "a few bad lines" from "the file is not UTF-8"
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
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
_LOCAL_BUILDERS = {  # `datasets` builders for a single local data file
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


class _Line(NamedTuple):
    number: int  # 1-based physical line
    text: str  # decoded, line ending kept; undecodable bytes replaced; "\n" for an over-long line
    problem: Problem | None = None  # why the line cannot be used
    bad_utf8: bool = False


def read_records(path: str, *, max_line_bytes: int = 1_000_000) -> Iterator[RawRecord | Problem]:
    """Yield each record of `path` (a file or `hf:OWNER/NAME[:SPLIT]`), or a Problem in its place.

    Raises DataError (lazily, while iterating) when the whole file is unusable.
    """
    if path.startswith("hf:"):
        items = _read_hf(path)
    else:
        ext = _check_path(path)
        if ext == ".parquet":
            items = _read_parquet(path)
        elif ext == ".json":
            # No line limit: a minified JSON array is one long line by design.
            items = _read_json(path, _read_lines(path, None, bom_ok=False))
        elif ext in JSONL_EXTENSIONS:
            items = _read_jsonl(path, _read_lines(path, max_line_bytes, bom_ok=False))
        else:
            lines = _read_lines(path, max_line_bytes, bom_ok=True)  # Excel writes a BOM
            items = _read_csv(path, lines, ext != ".csv", max_line_bytes)
    empty = True
    for item in items:
        empty = False
        yield item
    if empty:
        what = "a header row but no rows below it" if path.lower().endswith(CSV_EXTENSIONS) else ""
        raise _file_error(path, f"has {what or 'no rows'}; check that you passed the right file")


def _file_error(path: str, message: str, line: int | None = None) -> DataError:
    return DataError([Problem(Location(path, line), message)])


def _check_path(path: str) -> str:
    """Return the lower-case extension of an existing, supported file."""
    p = Path(path)
    if p.is_dir():
        found = sorted(f.name for f in p.iterdir() if f.suffix.lower() in SUPPORTED)[:5]
        inside = f" (it holds {', '.join(found)})" if found else ""
        raise _file_error(
            path, f"is a directory{inside}; pass one data file, or hf:{path} to load the directory"
        )
    if not p.exists():
        raise _file_error(path, f"does not exist (looked in {os.getcwd()}); check the path")
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise _file_error(
            path,
            f"has an unsupported extension '{p.suffix or '(none)'}'; supported: "
            f"{', '.join(SUPPORTED)}, or hf:OWNER/NAME[:SPLIT] for a Hugging Face dataset "
            "(export spreadsheets as CSV)",
        )
    return ext


# ---------------------------------------------------------------- bytes to decoded lines


def _read_lines(path: str, max_line_bytes: int | None, *, bom_ok: bool) -> Iterator[_Line]:
    try:
        with open(path, "rb") as f:
            _check_start(path, f, bom_ok)
            lines = _split_lines(path, f, max_line_bytes)
            head = list(itertools.islice(lines, _ENCODING_SAMPLE))
            _check_encoding(path, head)
            yield from head
            yield from lines
    except OSError as e:
        raise _file_error(path, f"could not be read ({e.strerror}); check its permissions") from e


def _check_start(path: str, f: Any, bom_ok: bool) -> None:
    """Reject empty, wide-encoded and binary files; leave `f` just after an accepted BOM."""
    head = f.read(4096)
    for magic, what, fix in _BINARY_MAGIC:
        if head.startswith(magic):
            fix = fix.format(path=path, out=_renamed(path, "unpacked"))
            raise _file_error(path, f"is {what}, not UTF-8 text; {fix}")
    wide = next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)
    if not wide and head.count(0) * 4 >= len(head) > 1:  # ASCII in UTF-16 is half zero bytes
        wide = "UTF-16LE" if head[1] == 0 else "UTF-16BE"  # no BOM: name the byte order
    if wide:
        raise _file_error(
            path,
            f"is {wide} encoded; re-save it as UTF-8 "
            f"(e.g. iconv -f {wide} -t UTF-8 {path} > {_renamed(path, 'utf8')})",
        )
    start = 0
    if head.startswith(codecs.BOM_UTF8):
        if not bom_ok:
            raise _file_error(
                path,
                "starts with a UTF-8 byte-order mark (BOM), which JSON does not allow; remove it "
                f"(e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}) or save as UTF-8 without BOM",
            )
        start = len(codecs.BOM_UTF8)
    if not head[start:].strip() and _rest_is_blank(f):
        raise _file_error(path, "is empty; check that you passed the right file")
    f.seek(start)


def _rest_is_blank(f: Any) -> bool:
    return not any(chunk.strip() for chunk in iter(lambda: f.read(1 << 20), b""))


def _split_lines(path: str, f: Any, limit: int | None) -> Iterator[_Line]:
    for number in itertools.count(1):
        # readline(limit + 1) never holds more than the limit in memory, however long the line.
        chunk = f.readline() if limit is None else f.readline(limit + 1)
        if not chunk:
            return
        if limit is not None and len(chunk) > limit and not chunk.endswith(b"\n"):
            yield _too_long(path, number, chunk, f, limit)
            continue
        try:
            yield _Line(number, chunk.decode("utf-8"))
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
            yield _Line(number, text, problem, bad_utf8=True)


def _too_long(path: str, number: int, first: bytes, f: Any, limit: int) -> _Line:
    size, chunk = len(first), first
    while not chunk.endswith(b"\n"):  # skip the rest of the line without keeping it
        chunk = f.readline(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    size -= len(chunk) - len(chunk.rstrip(b"\r\n"))
    message = (
        f"line is {_size(size)}, over the {_size(limit)} limit (--max-line-bytes); "
        "shorten or split it, or raise --max-line-bytes"
    )
    raw = first[:800].decode("utf-8", errors="replace")[:200] + "…"
    return _Line(number, "\n", Problem(Location(path, number), message, raw=raw))


def _check_encoding(path: str, head: list[_Line]) -> None:
    """Many bad lines mean the whole file is in another encoding: one error, not thousands."""
    bad = [line for line in head if line.bad_utf8]
    used = [line for line in head if line.problem or line.text.strip()]
    if bad and len(bad) * 2 > len(used):
        first = bad[0]
        raise _file_error(
            path,
            f"is not UTF-8: {len(bad)} of the first {len(used)} lines fail; "
            f"line {first.number} is {first.problem.message if first.problem else ''}",
        )


def _renamed(path: str, tag: str) -> str:
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{tag}{p.suffix}"))


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------- JSON Lines and JSON


def _read_jsonl(path: str, lines: Iterable[_Line]) -> Iterator[RawRecord | Problem]:
    for line in lines:
        if line.problem:
            yield line.problem
        elif line.text.strip():  # blank lines are skipped, but still counted
            yield _parse_json_line(path, line)


def _parse_json_line(path: str, line: _Line) -> RawRecord | Problem:
    where = Location(path, line.number)
    text = line.text.rstrip("\r\n")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return Problem(where, f"{_json_error(e, 'line')}; fix or remove the line", raw=text)
    if not isinstance(value, dict):
        message = f"expected a JSON object, found {_kind(value)}; each line must be one {{...}}"
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


def _kind(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _read_json(path: str, lines: Iterable[_Line]) -> Iterator[RawRecord | Problem]:
    lines = list(lines)
    text = "".join(line.text for line in lines)
    start = _JSON_SPACE.match(text).end()
    if text.startswith("[", start):
        yield from _read_json_array(path, text, start, lines)
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        # Not one JSON value: JSON Lines saved as .json reads fine line by line.
        first = next((line for line in lines if line.text.strip()), None)
        if first and not first.problem and isinstance(_parse_json_line(path, first), RawRecord):
            yield from _read_jsonl(path, lines)
            return
        raise _json_file_error(path, e) from None
    what = _kind(value)
    if isinstance(value, dict):
        what = "a single JSON object"
        lists = [
            k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        ]
        what += f" (are the records its '{lists[0]}' list? save that list alone)" if lists else ""
    raise _file_error(
        path,
        f"holds {what}, not a list of records; "
        "use a JSON array [{...}, {...}] or JSON Lines (.jsonl, one object per line)",
    )


def _read_json_array(
    path: str, text: str, start: int, lines: list[_Line]
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
            message = f"expected a JSON object, found {_kind(value)}; make every element {{...}}"
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
    return _file_error(path, f"{_json_error(e, 'file')}; {advice}", e.lineno)


# ---------------------------------------------------------------- CSV and TSV


class _CsvFeed:
    """Hands lines to csv.reader and remembers the lines of the record being parsed."""

    def __init__(self, lines: Iterator[_Line], max_bytes: int) -> None:
        self.lines, self.max_bytes = lines, max_bytes
        self.record: list[_Line] = []
        self.size = 0
        self.overflow = False  # a record grew past max_bytes: we stopped feeding it
        self.exhausted = False  # the reader asked for a line past the end

    def next_record(self) -> None:
        self.record, self.size = [], 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            if self.record and self.size > self.max_bytes:
                self.overflow = True  # a runaway quote: do not swallow the whole file
                break
            self.record.append(line)
            self.size += len(line.text)  # characters, close enough to bytes for a guard
            yield line.text
        self.exhausted = True


def _read_csv(
    path: str, lines: Iterator[_Line], tab: bool, max_bytes: int
) -> Iterator[RawRecord | Problem]:
    lines = iter(lines)
    first = next((line for line in lines if line.problem or line.text.strip()), None)
    if first is None:
        raise _file_error(path, "is empty; check that you passed the right file")
    delimiter = "\t" if tab else _sniff_delimiter(first.text)
    # Long quoted values are legal; our own max_bytes guard stops runaway quotes instead.
    csv.field_size_limit(max(csv.field_size_limit(), min(2 * max_bytes + 2, 2**31 - 1)))
    feed = _CsvFeed(itertools.chain([first], lines), max_bytes)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    while True:
        feed.next_record()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problem = _csv_error(path, feed, delimiter, str(e))
            if header is None:
                raise DataError([problem], "the first line must be the header row") from None
            yield problem
            continue
        start = feed.record[0].number
        bad = next((line.problem for line in feed.record if line.problem), None)
        if bad and header is None:
            raise DataError([bad], "the first line must be the header row")
        if bad:
            yield bad
        elif not any(row):
            continue  # blank lines and rows of empty fields carry nothing
        elif header is None:
            header = _check_header(path, row, start)
        elif len(row) != len(header):
            shown = "a tab" if delimiter == "\t" else f"'{delimiter}'"
            message = (
                f"expected {len(header)} fields, found {len(row)} (an unquoted delimiter or "
                f"quote?); quote values that contain {shown}, and double quotes inside them"
            )
            yield Problem(Location(path, start), message, raw=_raw(feed.record))
        else:
            yield RawRecord(dict(zip(header, row, strict=True)), Location(path, start))


def _sniff_delimiter(header: str) -> str:
    if "," in header:
        return ","
    best = max(";|\t", key=header.count)
    return best if best in header else ","


def _check_header(path: str, row: list[str], line: int) -> list[str]:
    names = [name.strip() for name in row]  # names only: values are kept exactly as written
    unnamed = ", ".join(str(i) for i, name in enumerate(names, 1) if not name)
    repeated = ", ".join(sorted({repr(n) for n in names if n and names.count(n) > 1}))
    messages = [
        unnamed
        and f"the header row has no name for column {unnamed}; name every column "
        "in the first line, or delete the empty columns",
        repeated
        and f"the header row repeats column {repeated}; rename the columns so that "
        "each name is unique",
    ]
    if any(messages):
        raise DataError([Problem(Location(path, line), m) for m in messages if m])
    return names


def _csv_error(path: str, feed: _CsvFeed, delimiter: str, error: str) -> Problem:
    record = feed.record or [_Line(0, "")]
    start, last = record[0], record[-1]
    where = Location(path, start.number or None)
    fix = 'close the quote, and double quotes inside a quoted value ("")'
    if feed.exhausted or feed.overflow:
        # Find the line where the open quote started: its value holds every newline after it.
        texts = [line.text for line in record]
        value = next(csv.reader(texts, delimiter=delimiter))[-1]
        opened = last.number - value.count("\n") + last.text.endswith("\n")
        where = Location(path, opened)
        if opened < last.number or feed.overflow:
            span = f"lines {opened}-{last.number}"
            if feed.overflow:
                span = f"lines past the {_size(feed.max_bytes)} limit (--max-line-bytes)"
            message = f"a quote opened at line {opened} is never closed and swallows {span}; {fix}"
            raise DataError([Problem(where, message, raw=record[0].text.rstrip("\r\n"))])
        message = f"a quote opened on this line is never closed; {fix}"
    elif "new-line character" in error:
        message = "a carriage return (\\r) inside an unquoted value; quote the value or remove it"
    elif last.number > start.number:
        message = (
            f"a quote opened at line {start.number} runs on to line {last.number} ({error}): an "
            f"unterminated quote?; {fix}"
        )
    else:
        message = f"malformed quoting ({error}); {fix}"
    return Problem(where, message, raw=_raw(record))


def _raw(record: list[_Line]) -> str:
    return "".join(line.text for line in record).rstrip("\r\n")


# ---------------------------------------------------------------- Parquet and datasets


def _read_parquet(path: str) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        yield from _table_rows(path, batches)
    except (pa.ArrowException, OSError) as e:
        raise _file_error(
            path, f"is not a readable Parquet file ({e}); re-export it, or save it as .jsonl"
        ) from None


def _table_rows(file: str, batches: Iterable[Any]) -> Iterator[RawRecord]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist(maps_as_pydicts="lossy"):
            number += 1
            yield RawRecord(_plain(row), Location(file, number, "row"))


def _plain(value: Any) -> Any:
    """Arrow values as JSON-serialisable Python: dates as ISO text, bytes as text or base64."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)  # Decimal, timedelta: exact as text


def _read_hf(spec: str) -> Iterator[RawRecord]:
    name, sep, split = spec[3:].rpartition(":")
    if not sep or not split or "/" in split:  # no split given (or a ':' inside a path)
        name, split = spec[3:], ""
    if not name:
        raise _file_error(spec, "names no dataset; write hf:OWNER/NAME[:SPLIT] or hf:DIRECTORY")
    dataset = _load_hf(spec, name, split or None)
    yield from _table_rows(spec, dataset.with_format("arrow").iter(batch_size=1024))


def _load_hf(spec: str, name: str, split: str | None) -> Any:
    import datasets  # slow to import: only when asked for

    local = Path(name).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            return _pick_split(spec, datasets.load_from_disk(str(local)), split)
        if local.is_dir():
            return datasets.load_dataset(str(local), split=split or "train")
        if local.is_file():
            builder = _LOCAL_BUILDERS.get(local.suffix.lower(), "text")
            return datasets.load_dataset(builder, data_files=str(local), split=split or "train")
    except DataError:
        raise
    except Exception as e:  # the library raises many types; its message is what matters
        raise _file_error(
            spec,
            f"could not be loaded from {name} ({_short(e)}); check the directory holds data files "
            f"or a save_to_disk dataset, and pick a split with hf:{name}:SPLIT",
        ) from None
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as e:
        raise _file_error(
            spec,
            f"could not be loaded from the Hugging Face Hub ({_short(e)}): the hub could not be "
            "reached or has no such dataset; pass a local file or directory instead "
            "(data.jsonl, or hf:./saved_dataset)",
        ) from None


def _pick_split(spec: str, loaded: Any, split: str | None) -> Any:
    if not hasattr(loaded, "keys"):  # a single Dataset has no splits to choose from
        return loaded
    if split is None:
        split = "train" if "train" in loaded or len(loaded) != 1 else next(iter(loaded))
    if split not in loaded:
        raise _file_error(
            spec, f"has no split '{split}' (it has {', '.join(loaded)}); pick one: hf:NAME:SPLIT"
        )
    return loaded[split]


def _short(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__
