"""`tuneforge train` with a bad config: exit 2, one clear message, and no run directory."""

from __future__ import annotations

import pytest

# name -> (YAML text, overrides after the base ones, substrings the message must contain).
CASES = {
    "unknown key (override)": (
        "",
        ["train.epoch=3"],
        ["unknown key 'train.epoch'", "train.epochs"],
    ),
    "unknown key (yaml)": (
        "train:\n  learning_rte: 0.1\n",
        [],
        ["unknown key 'train.learning_rte'", "train."],
    ),
    "unknown section": ("", ["trian.lr=3"], ["unknown key 'trian'", "did you mean train"]),
    "wrong type": ("", ["train.batch_size=many"], ["train.batch_size", "an integer", "'many'"]),
    "wrong choice": ("", ["method.kind=lorra"], ["method.kind", "'qlora'", "'lorra'"]),
    "impossible combination": (
        "",
        ["method.kind=full", "method.quantization=nf4"],
        ["full fine-tuning cannot train a 4-bit quantized base", "method.kind=qlora"],
    ),
    "missing target module": (
        "",
        ["method.target_modules=[q_proj, qkv_proj]"],
        ["no module named 'qkv_proj'", "q_proj, k_proj, v_proj, o_proj", "down_proj"],
    ),
    "data.dir without train.jsonl": ("", ["data.dir={empty}"], ["no train.jsonl", "prepare"]),
    "data.dir missing": ("", ["data.dir={missing}"], ["no such directory", "tuneforge prepare"]),
    "data.dir unset": ("", ["data.dir=null"], ["data.dir is not set", "data.dir="]),
    "eval without val data": (
        "",
        ["data.dir={no_val}", "train.eval_every=1"],
        ["validation data", "val.jsonl"],
    ),
    "malformed train.jsonl": ("", ["data.dir={broken}"], ["train.jsonl:2", "malformed JSON"]),
    "empty train.jsonl": ("", ["data.dir={blank}"], ["train.jsonl: is empty", "prepare"]),
    "row without an answer": (
        "",
        ["data.dir={no_answer}"],
        ["train.jsonl:2", "must end with the assistant's answer"],
    ),
}


@pytest.fixture
def data_dirs(tmp_path, rows):
    import json

    empty = tmp_path / "empty"
    empty.mkdir()
    no_val = tmp_path / "no_val"
    no_val.mkdir()
    (no_val / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(8)))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.jsonl").write_text(json.dumps(rows(1)[0]) + "\n{not json\n")
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "train.jsonl").write_text("\n\n")
    no_answer = tmp_path / "no_answer"
    no_answer.mkdir()
    question = {"messages": [{"role": "user", "content": "hi"}]}
    (no_answer / "train.jsonl").write_text(json.dumps(rows(1)[0]) + "\n" + json.dumps(question))
    return {
        "empty": empty,
        "missing": tmp_path / "nope",
        "no_val": no_val,
        "broken": broken,
        "blank": blank,
        "no_answer": no_answer,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_exits_2_with_one_message_and_no_run_dir(
    case, base_overrides, data_dirs, cli, config_file, tmp_path
):
    yaml_text, overrides, expected = CASES[case]
    overrides = [o.format(**data_dirs) for o in overrides]
    run_dir = tmp_path / "out" / "run"
    result = cli("train", config_file(yaml_text), *base_overrides, *overrides, "-o", run_dir)

    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())  # rich may wrap; compare on single spaces
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    assert result.stderr.count("error:") == 1
    assert "Traceback" not in result.output
    assert not run_dir.exists() and not run_dir.parent.exists()


def test_config_file_not_found(cli, tmp_path):
    result = cli("train", tmp_path / "nope.yaml", "-o", tmp_path / "run")
    assert result.exit_code == 2
    assert "config file not found" in result.stderr
    assert not (tmp_path / "run").exists()


def test_output_that_is_a_file_is_refused(base_overrides, cli, config_file, tmp_path):
    target = tmp_path / "run"
    target.write_text("not a run")
    result = cli("train", config_file(), *base_overrides, "-o", target)
    assert result.exit_code == 2 and "not a directory" in result.stderr
    assert target.read_text() == "not a run"


def test_force_never_replaces_the_data_directory(base_overrides, cli, config_file, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(base_overrides[1].split("=", 1)[1], data)
    before = sorted(p.name for p in data.iterdir())
    result = cli("train", config_file(), *base_overrides, f"data.dir={data}", "-o", data, "--force")
    assert result.exit_code == 2, result.output
    assert "holds the input" in " ".join(result.stderr.split())
    assert sorted(p.name for p in data.iterdir()) == before


def test_force_replaces_only_a_run(base_overrides, cli, config_file, tmp_path):
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = cli("train", config_file(), *base_overrides, "-o", folder, "--force")
    assert result.exit_code == 2, result.output
    assert "holds no tuneforge run" in " ".join(result.stderr.split())
    assert (folder / "notes.txt").read_text() == "mine"


def test_current_directory_is_refused(base_overrides, cli, config_file, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("train", config_file(), *base_overrides, "-o", ".")
    assert result.exit_code == 2, result.output
    assert "current directory" in " ".join(result.stderr.split())
    assert list(work.iterdir()) == []


def test_an_output_that_cannot_be_created_is_refused(base_overrides, cli, config_file, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = cli("train", config_file(), *base_overrides, "-o", blocker / "run")
    assert result.exit_code == 2, result.output
    assert "is a file" in result.stderr and "Traceback" not in result.output
