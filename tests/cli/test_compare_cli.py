"""`tuneforge compare` from the command line: the real path (a training process per variant),
and bad input (exit 2, one message naming the problem, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_cache")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "smollm2-135m" / "lora.yaml"
WORDS = {"apple": "fruit", "carrot": "vegetable", "salmon": "fish", "oak": "tree"}


def _rows(numbers: range) -> str:
    lines = []
    for i in numbers:
        word = list(WORDS)[i % len(WORDS)]
        text = f"What is {word}? item {i}"
        messages = [
            {"role": "system", "content": "Answer with the label only."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": WORDS[word]},
        ]
        lines.append(json.dumps({"messages": messages, "label": WORDS[word], "text": text}))
    return "\n".join(lines) + "\n"


@pytest.fixture
def args(tmp_path, tiny_model_dir) -> list[str]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(_rows(range(16)))
    (data / "test.jsonl").write_text(_rows(range(100, 108)))
    (data / "labels.json").write_text(json.dumps(sorted(set(WORDS.values()))))
    return [
        str(CONFIG),
        f"model.name={tiny_model_dir}",
        f"data.dir={data}",
        "tracking.tensorboard=false",
        "train.max_steps=1",
        "train.batch_size=8",
    ]


def _invoke(*argv: str):
    return CliRunner().invoke(app, ["compare", *argv])


def test_compare_cli_trains_in_a_child_process_and_names_a_winner(args, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training processes: one thread each
    out = tmp_path / "cmp"
    grid = ["--grid", "lora.r=2", "--baselines", "zero", "-o", str(out)]
    result = _invoke(*args, *grid)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["winner"] is not None and "Winner:" in result.output
    assert [r["name"] for r in summary["rows"]] == ["r2", "prompt-only: zero-shot"]
    row = summary["rows"][0]
    assert row["status"] == "done" and row["peak_memory_kind"] == "rss"
    log = (out / "logs" / "r2.log").read_text()
    assert "tuneforge train" in log and "trained 1 steps" in log
    # Run again: the finished variant is reported, not retrained.
    again = _invoke(*args, *grid)
    assert again.exit_code == 0, again.output
    assert "r2: already trained and evaluated; not rerun" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "lora.rank=4,16"], "unknown key 'method.rank'"),
        (["--grid", "method=lora,sparse"], "method.kind"),
        (["--grid", "lora.r=4,,16"], "empty value"),
        (["--grid", "data.dir=a,b"], "cannot vary"),
        (["--baselines", "oracle"], "--baselines"),
        (["--budget-minutes", "-1"], "--budget-minutes must be positive"),
        (["--scoring", "greedy"], "--scoring 'greedy'"),
        (["--precision", "fp8"], "--precision 'fp8'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(args, tmp_path, extra, message):
    out = tmp_path / "cmp"
    result = _invoke(*args, *extra, "-o", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
