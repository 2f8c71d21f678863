"""Reading every supported input into RawRecords, and naming every problem with file:line."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.data.load import SUPPORTED, read_records
from tuneforge.data.records import DataError, Problem, RawRecord

BANKING77 = Path(__file__).parents[2] / ".." / "shared" / "data" / "banking77" / "train.csv"


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def read(path: str, **kwargs: Any) -> list[RawRecord | Problem]:
    return list(read_records(path, **kwargs))


def records(items: list[RawRecord | Problem]) -> list[tuple[int | None, dict[str, Any]]]:
    assert all(isinstance(item, RawRecord) for item in items), items
    return [(item.where.line, item.fields) for item in items]


def problems(items: list[RawRecord | Problem]) -> list[Problem]:
    return [item for item in items if isinstance(item, Problem)]


def file_error(path: str, *phrases: str, line: int | None = None, **kwargs: Any) -> str:
    """Reading `path` fails as a whole; the message names the file (and line) and the phrases."""
    with pytest.raises(DataError) as caught:
        read(path, **kwargs)
    message = str(caught.value)
    prefix = path if line is None else f"{path}:{line}:"
    assert message.startswith(prefix), message
    for phrase in phrases:
        assert phrase in message, message
    return message


def row_problem(problem: Problem, path: str, line: int, *phrases: str) -> None:
    text = str(problem)
    assert text.startswith(f"{path}:{line}: "), text
    for phrase in phrases:
        assert phrase in text, text


# ---------------------------------------------------------------- good input


def test_jsonl_records_keep_physical_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"a": 1}\r\n\n  \n{"a": "x y "}\n{"b": [1, {"c": null}]}')
    assert records(read(path)) == [(1, {"a": 1}), (4, {"a": "x y "}), (5, {"b": [1, {"c": None}]})]


def test_ndjson_and_upper_case_extension(tmp_path: Path) -> None:
    assert records(read(write(tmp_path, "D.NDJSON", '{"a": 1}\n'))) == [(1, {"a": 1})]


def test_json_array_elements_located_where_they_start(tmp_path: Path) -> None:
    text = '[{"a": 1},\n\n  {"a": 2}, {"a": "[not, an, end]"},\n{\n"a": 4\n}\n,{"a": 5}]\n'
    path = write(tmp_path, "d.json", text)
    lines = [line for line, _ in records(read(path))]
    assert lines == [1, 3, 3, 4, 7]


def test_json_array_on_its_own_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", '\n[\n  {"a": 1},\n  {"a": 2}\n]\n')
    assert records(read(path)) == [(3, {"a": 1}), (4, {"a": 2})]


def test_json_file_holding_json_lines_is_read_as_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", '{"a": 1}\n\n{"a": 2}\n')
    assert records(read(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_csv_values_exact_and_multiline_records_located_at_their_start(tmp_path: Path) -> None:
    text = 'text,label\r\n"two\r\nlines", a \r\n\r\n,\r\n  padded  ,b\r\n"say ""hi""\n\n!",c\r\n'
    path = write(tmp_path, "d.csv", text)
    assert records(read(path)) == [
        (2, {"text": "two\r\nlines", "label": " a "}),
        (6, {"text": "  padded  ", "label": "b"}),
        (7, {"text": 'say "hi"\n\n!', "label": "c"}),
    ]


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=8))
def test_csv_round_trip_with_start_lines(rows: list[tuple[str, str]]) -> None:
    """Whatever csv.writer writes (quotes, newlines, delimiters) reads back at the right line."""
    out = io.StringIO()
    csv.writer(out).writerows([("a", "b"), *rows])
    text = out.getvalue()
    expected, line = [], 2
    for row in rows:
        if any(row):
            expected.append((line, {"a": row[0], "b": row[1]}))
        row_out = io.StringIO()
        csv.writer(row_out).writerow(row)
        line += row_out.getvalue().count("\n")
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "d.csv", text)
        if not expected:
            file_error(path, "no rows")
        else:
            assert records(read(path)) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.text(max_size=3), st.text(max_size=5) | st.integers(), max_size=2),
            st.sampled_from([None, 1, 2]),
            st.sampled_from([",", ",\n", "\n,\n\n", " , "]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_json_array_start_lines(elements: list[tuple[dict, int | None, str]]) -> None:
    """Each element is located at the line where it starts, however the array is laid out."""
    text, expected = "[\n", []
    for value, indent, separator in elements:
        expected.append((text.count("\n") + 1, value))
        text += json.dumps(value, indent=indent) + separator
    text = text.rstrip(", \n") + "\n]\n"
    with tempfile.TemporaryDirectory() as folder:  # hypothesis cannot reuse tmp_path
        assert records(read(write(Path(folder), "d.json", text))) == expected


def test_csv_accepts_excel_bom_and_trims_header_names(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", codecs.BOM_UTF8 + b"text , label\nhi,x\n")
    assert records(read(path)) == [(2, {"text": "hi", "label": "x"})]


@pytest.mark.parametrize("delimiter", [";", "|", "\t"])
def test_csv_delimiter_taken_from_header(tmp_path: Path, delimiter: str) -> None:
    path = write(tmp_path, "d.csv", f"text{delimiter}label\nhi, there{delimiter}x\n")
    assert records(read(path)) == [(2, {"text": "hi, there", "label": "x"})]


@pytest.mark.parametrize("name", ["d.tsv", "d.TAB"])
def test_tsv(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "text\tlabel\nhi, there; you\tx\n")
    assert records(read(path)) == [(2, {"text": "hi, there; you", "label": "x"})]


def test_parquet_rows_are_plain_python(tmp_path: Path) -> None:
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "text": ["a", None],
            "tags": [["x", "y"], []],
            "meta": [{"k": 1}, None],
            "when": [datetime.datetime(2024, 5, 1, 12, 0), None],
            "blob": [b"hi", b"\xff"],
            "map": pa.array([[("a", 1)], []], type=pa.map_(pa.string(), pa.int64())),
        }
    )
    path = str(tmp_path / "d.parquet")
    pq.write_table(table, path)
    items = read(path)
    assert [str(item.where) for item in items] == [f"{path} row 1", f"{path} row 2"]
    first, second = (item.fields for item in items)
    assert first == {
        "text": "a",
        "tags": ["x", "y"],
        "meta": {"k": 1},
        "when": "2024-05-01T12:00:00",
        "blob": "hi",
        "map": {"a": 1},
    }
    assert second["text"] is None and second["blob"] == "/w=="
    json.dumps([first, second])


def test_banking77_csv_loads_fast() -> None:
    if not BANKING77.is_file():
        pytest.skip("Banking77 is not in shared/data")
    start = time.perf_counter()
    items = read(str(BANKING77))
    elapsed = time.perf_counter() - start
    assert len(items) == 10_003 and not problems(items)
    assert all(set(item.fields) == {"text", "category"} for item in items)
    assert elapsed < 1.0


# ---------------------------------------------------------------- hf: datasets, offline


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    # The library reads HF_HUB_OFFLINE at import time, so patch its copy too: fail fast.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_hf_saved_dataset(tmp_path: Path, hf_cache: None) -> None:
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(saved))
    spec = f"hf:{saved}"
    items = read(spec)
    assert [str(item.where) for item in items] == [f"{spec} row 1", f"{spec} row 2"]
    assert [item.fields for item in items] == [{"text": "a", "label": 0}, {"text": "b", "label": 1}]


def test_hf_saved_dataset_dict_picks_split(tmp_path: Path, hf_cache: None) -> None:
    import datasets

    saved = tmp_path / "dd"
    split = {"train": {"t": ["a"]}, "test": {"t": ["b", "c"]}}
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in split.items()}).save_to_disk(
        str(saved)
    )
    assert [item.fields["t"] for item in read(f"hf:{saved}")] == ["a"]
    assert [item.fields["t"] for item in read(f"hf:{saved}:test")] == ["b", "c"]
    file_error(f"hf:{saved}:dev", "no split 'dev'", "test", "train")


def test_hf_local_directory_of_jsonl_files(tmp_path: Path, hf_cache: None) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    items = read(f"hf:{folder}")
    assert [(item.where.line, item.where.unit, item.fields) for item in items] == [
        (1, "row", {"text": "a"}),
        (2, "row", {"text": "b"}),
    ]


def test_hf_hub_unreachable(hf_cache: None) -> None:
    file_error(
        "hf:nobody-here/no-such-dataset:train",
        "Hugging Face Hub",
        "'nobody-here/no-such-dataset'",  # the library's own short reason
        "could not be reached",
        "pass a local file or directory",
    )


# ---------------------------------------------------------------- file-level problems


def test_missing_file_and_directory(tmp_path: Path) -> None:
    file_error(str(tmp_path / "nope.jsonl"), "does not exist", "check the path")
    write(tmp_path, "a.jsonl", '{"a": 1}\n')
    file_error(str(tmp_path), "is a directory", "a.jsonl", "pass one data file")


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    path = write(tmp_path, "d.xlsx", b"PK\x03\x04")
    file_error(path, "'.xlsx'", *SUPPORTED, "export spreadsheets as CSV")


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n  ", codecs.BOM_UTF8 + b"\n"])
@pytest.mark.parametrize("name", ["d.csv", "d.jsonl", "d.json"])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    if content.startswith(codecs.BOM_UTF8) and not name.endswith(".csv"):
        content = b"\n \n"
    file_error(write(tmp_path, name, content), "is empty", "right file")


@pytest.mark.parametrize("name", ["d.csv", "d.jsonl"])
def test_utf16_and_utf32(tmp_path: Path, name: str) -> None:
    text = "text,label\nhi,x\n" if name.endswith(".csv") else '{"a": 1}\n'
    path = write(tmp_path, name, text.encode("utf-16"))
    file_error(path, "is UTF-16 encoded; re-save it as UTF-8", "iconv -f UTF-16 -t UTF-8")
    path = write(tmp_path, name, text.encode("utf-32"))
    file_error(path, "is UTF-32 encoded", "iconv")
    path = write(tmp_path, name, text.encode("utf-16-le"))  # no BOM at all
    file_error(path, "UTF-16", "iconv")


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_utf8_bom_rejected_for_json(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, codecs.BOM_UTF8 + b'{"a": 1}\n')
    file_error(path, "byte-order mark (BOM)", "JSON does not allow", "remove it")


def test_gzip_named_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", gzip.compress(b'{"a": 1}\n' * 50))
    file_error(path, "gzip", "not UTF-8", f"zcat {path} > ")


def test_mostly_latin1_file_is_one_error(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "text,label\ncafé,x\nnaïve,y\nrésumé,z\n".encode("latin-1"))
    file_error(path, "is not UTF-8: 3 of the first 4 lines", "line 2", "iconv -f latin1")


# ---------------------------------------------------------------- row-level problems


def test_bad_utf8_line_is_a_row_problem(tmp_path: Path) -> None:
    lines = ['{"t": "a"}', '{"t": "b"}', '{"t": "caf\xe9 au lait"}', '{"t": "d"}']
    path = write(tmp_path, "d.jsonl", "\n".join(lines).encode("latin-1"))
    items = read(path)
    assert [item.where.line for item in items] == [1, 2, 3, 4]
    (problem,) = problems(items)
    row_problem(problem, path, 3, "not valid UTF-8 (byte 0xE9 at column 11)", "iconv -f latin1")
    assert problem.raw == '{"t": "caf\ufffd au lait"}'


def test_bad_utf8_in_csv_record_and_cp1252_advice(tmp_path: Path) -> None:
    content = 'text,label\na,x\n"it\u2019s\nbroken",y\nb,z\n'.encode("cp1252")
    path = write(tmp_path, "d.csv", content)
    items = read(path)
    assert [type(item).__name__ for item in items] == ["RawRecord", "Problem", "RawRecord"]
    row_problem(items[1], path, 3, "byte 0x92 at column 4", "iconv -f cp1252 -t utf-8")
    assert items[2].where.line == 5


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv"])
def test_over_long_line_is_skipped_fast(tmp_path: Path, name: str) -> None:
    huge = '{"t": "' + "x" * 10_500_000 + '"}'
    head, row = ("t\n", "ok") if name.endswith(".csv") else ("", '{"t": "ok"}')
    path = write(tmp_path, name, f"{head}{row}\n{huge}\n{row}\n")
    start = time.perf_counter()
    items = read(path)
    assert time.perf_counter() - start < 1.0
    offset = len(head.splitlines())
    assert [item.where.line for item in items] == [1 + offset, 2 + offset, 3 + offset]
    problem = items[1]
    assert isinstance(problem, Problem)
    message = "line is 10.5 MB, over the 1 MB limit (--max-line-bytes)"
    row_problem(problem, path, 2 + offset, message, "shorten or split it")
    assert len(problem.raw) == 201 and problem.raw.endswith("…")


def test_jsonl_malformed_and_non_object_lines(tmp_path: Path) -> None:
    lines = ['{"a": 1}', '{"a": 1, "b": "cut', "[1, 2]", "{'a': 1}", '"text"', '{"a": 2}']
    path = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    items = read(path)
    assert [item.where.line for item in items] == [1, 2, 3, 4, 5, 6]
    bad = problems(items)
    assert [p.raw for p in bad] == lines[1:5]
    row_problem(bad[0], path, 2, "Unterminated string starting at column 15", "(a truncated line?)")
    row_problem(bad[0], path, 2, "fix or remove the line")
    row_problem(bad[1], path, 3, "expected a JSON object, found a list", "one {...}")
    row_problem(bad[2], path, 4, "malformed JSON", "column 2", "single quotes")
    row_problem(bad[3], path, 5, "found a string")


def test_jsonl_example_message(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"messages": [{"role": "user", "content": "hello"} {')
    (problem,) = read(path)
    row_problem(problem, path, 1, "malformed JSON: Expecting ',' delimiter at column 52")


def test_json_array_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", '[\n{"a": 1},\n"oops",\n{"a": 2}\n]')
    items = read(path)
    row_problem(items[1], path, 3, "expected a JSON object, found a string", "every element")
    assert items[1].raw == "oops" and records([items[0], items[2]]) == [
        (2, {"a": 1}),
        (4, {"a": 2}),
    ]


@pytest.mark.parametrize(
    ("text", "line", "phrases"),
    [
        ('[\n{"a": 1},\n{"a": 2,}\n]', 3, ["column 9", "trailing or doubled comma"]),
        ('[\n{"a": 1},\n\n,,{"a": 2}]', 4, ["Expecting value at column 1"]),
        ('[\n{"a": 1}\n{"a": 2}]', 3, ["Expecting ',' delimiter or ']' at column 1"]),
        ('[\n{"a": 1},\n{"a": "cut', 3, ["Unterminated string", "truncated file"]),
        ('[{"a": 1}]\n[{"a": 2}]', 2, ["Extra data at column 1"]),
        ('{"a": 1}}', 1, ["Extra data at column 9"]),
    ],
)
def test_malformed_json_file(tmp_path: Path, text: str, line: int, phrases: list[str]) -> None:
    path = write(tmp_path, "d.json", text)
    file_error(path, "malformed JSON", *phrases, "json.tool", line=line)


def test_json_top_level_object(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", '{\n "data": [{"a": 1}]\n}\n')
    file_error(path, "a single JSON object", "'data'", "JSON array", "JSON Lines")
    file_error(write(tmp_path, "n.json", "42"), "holds a number", "JSON array")


def test_no_rows(tmp_path: Path) -> None:
    file_error(write(tmp_path, "h.csv", "text,label\n\n,\n"), "a header row but no rows")
    file_error(write(tmp_path, "e.json", "[ ]"), "has no rows")


@pytest.mark.parametrize(
    ("header", "phrases"),
    [
        ("text,label,text", ["repeats column 'text'", "unique"]),
        ("text,,label,", ["no name for column 2, 4", "name every column"]),
    ],
)
def test_bad_csv_header(tmp_path: Path, header: str, phrases: list[str]) -> None:
    path = write(tmp_path, "d.csv", f"{header}\na,b,c\n")
    file_error(path, *phrases, line=1)


def test_csv_ragged_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,label\na,x\nwhere is it, really,y\n"b\nc",y,\nd\n')
    items = read(path)
    assert [item.where.line for item in items] == [2, 3, 4, 6]
    expect = "expected 2 fields, found 3 (an unquoted delimiter or quote?)"
    row_problem(items[1], path, 3, expect, "quote values that contain ','")
    assert items[1].raw == "where is it, really,y"
    row_problem(items[2], path, 4, expect)
    row_problem(items[3], path, 6, "expected 2 fields, found 1")


def test_csv_quote_that_runs_into_the_next_line(tmp_path: Path) -> None:
    rows = ['"a",x', '"b,x', '"c",y', '"d",z']  # the quote on line 3 closes at line 4's quote
    path = write(tmp_path, "d.csv", "text,label\n" + "\n".join(rows) + "\n")
    items = read(path)
    assert [item.where.line for item in items] == [2, 3, 5]
    row_problem(items[1], path, 3, "quote opened at line 3 runs on to line 4", '("")')
    assert items[1].raw == '"b,x\n"c",y'


def test_csv_stray_quote_and_carriage_return(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,label\n"a"b,x\nc\rd,y\n27" screen,z\n')
    items = read(path)
    row_problem(items[0], path, 2, "malformed quoting", "double quotes")
    row_problem(items[1], path, 3, "carriage return", "quote the value or remove it")
    assert records(items[2:]) == [(4, {"text": '27" screen', "label": "z"})]


def test_csv_unterminated_quote_swallowing_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,label\na,x\nb,"y\nc,z\nd,w\n')
    file_error(path, "quote opened at line 3 is never closed", "lines 3-5", "close the", line=3)


def test_csv_unterminated_quote_on_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,label\na,x\nb,"y\n')
    items = read(path)
    row_problem(items[1], path, 3, "never closed", "close the quote")


def test_csv_runaway_quote_stops_at_the_line_limit(tmp_path: Path) -> None:
    rows = "".join(f"row {i},x\n" for i in range(2000))
    path = write(tmp_path, "d.csv", f'text,label\na,x\n"b,x\n{rows}')
    file_error(path, "never closed", "1 kB limit (--max-line-bytes)", line=3, max_line_bytes=1000)


def test_json_nested_too_deeply_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    deep = '{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "x"}'
    path = write(tmp_path, "d.jsonl", deep + '\n{"a": 1}\n')
    bad, good = read(path)
    row_problem(bad, path, 1, "nested too deeply", "fix or remove the line")
    assert isinstance(good, RawRecord)
    for name, text in [("d.json", deep), ("e.json", "[" + deep + "]")]:
        with pytest.raises(DataError, match="nested too deeply"):
            read(write(tmp_path, name, text))


def test_csv_header_of_empty_names_is_refused_at_line_1(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", ",\nCancel my order,cancel_order\n")
    with pytest.raises(DataError) as info:
        read(path)
    assert f"{path}:1" in str(info.value) and "no name for column 1, 2" in str(info.value)
