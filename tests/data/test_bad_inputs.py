"""Every broken input in tests/data/bad/ gives exit 2, a message naming file and line, no output."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app

BAD = Path(__file__).parent / "bad"
CASES = json.loads((BAD / "cases.json").read_text())
runner = CliRunner()


def run_prepare(inputs, out, *args):
    return runner.invoke(app, ["prepare", *map(str, inputs), "-o", str(out), *args])


def assert_refused(result, out, file_name, line=None, phrase=None):
    message = result.output
    assert result.exit_code == 2, message
    assert "Traceback" not in message
    assert file_name in message, message
    if line is not None:
        assert f"{file_name}:{line}" in message, message
    if phrase is not None:
        assert phrase in message, message
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_there_are_at_least_25_broken_inputs():
    assert len(CASES) >= 25
    assert all((BAD / name).is_file() for name in CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_input_is_refused(name, tmp_path, tiny_tokenizer_dir):
    case = CASES[name]
    out = tmp_path / "out"
    args = ["--tokenizer", str(tiny_tokenizer_dir), *case.get("args", [])]
    result = run_prepare([BAD / name], out, *args)
    assert_refused(result, out, name, case.get("line"), case.get("expect"))


def test_ten_megabyte_line_is_refused(tmp_path, tiny_tokenizer_dir):
    path = tmp_path / "huge.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    huge = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "x" * 10_000_000},
                {"role": "assistant", "content": "a"},
            ]
        }
    )
    path.write_text("\n".join([good, good, huge, good]) + "\n")
    out = tmp_path / "out"
    result = run_prepare([path], out, "--tokenizer", str(tiny_tokenizer_dir))
    assert_refused(result, out, "huge.jsonl", 3, "MB")


def test_skip_mode_writes_rejected_rows(tmp_path, tiny_tokenizer_dir):
    out = tmp_path / "out"
    result = run_prepare(
        [BAD / "unknown_role.jsonl"],
        out,
        "--tokenizer",
        str(tiny_tokenizer_dir),
        "--on-error",
        "skip",
    )
    assert result.exit_code == 0, result.output
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1
    assert rejected[0]["source"].endswith("unknown_role.jsonl:3")
    assert rejected[0]["field"] == "messages[0].role"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["invalid"] == 1 and manifest["rows"]["read"] == 9
