"""Read CSV and TSV files (already split into decoded lines) into `RawRecord`s and `Problem`s."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator

from tuneforge.data.lines import Line, file_error, human_size
from tuneforge.data.records import DataError, Location, Problem, RawRecord


class _CsvFeed:
    """Hands lines to csv.reader and remembers the lines of the record being parsed."""

    def __init__(self, lines: Iterator[Line], max_bytes: int) -> None:
        self.lines, self.max_bytes = lines, max_bytes
        self.record: list[Line] = []
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


def read_csv(
    path: str, lines: Iterator[Line], tab: bool, max_bytes: int
) -> Iterator[RawRecord | Problem]:
    lines = iter(lines)
    first = next((line for line in lines if line.problem or line.text.strip()), None)
    if first is None:
        raise file_error(path, "is empty; check that you passed the right file")
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
        elif not any(row) and (header is not None or len(row) <= 1):
            continue  # blank lines and rows of empty fields carry nothing (a header of empty
            # names, e.g. ",", is not skipped: the next row must not become the header)
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
    record = feed.record or [Line(0, "")]
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
                span = f"lines past the {human_size(feed.max_bytes)} limit (--max-line-bytes)"
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


def _raw(record: list[Line]) -> str:
    return "".join(line.text for line in record).rstrip("\r\n")
