"""End-to-end `prepare` through the CLI on small files, the demo dataset and Banking77."""

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.data.demo_data import EXTRACTION, demo_path

runner = CliRunner()


def prepare(*args):
    result = runner.invoke(app, ["prepare", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_csv(path: Path, rows):
    path.write_text("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows))
    return path


def labelled_rows(n_labels=4, per_label=12):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return [
        (
            f"{words[i % 8]} request {j} about {words[(i + j) % 8]} number {i * 100 + j}",
            f"label_{i}",
        )
        for i in range(n_labels)
        for j in range(per_label)
    ]


def test_demo_dataset_report_lists_planted_problems(tmp_path, tiny_tokenizer_dir):
    out = tmp_path / "demo"
    prepare(demo_path(), "-o", out, "--tokenizer", tiny_tokenizer_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "classification"
    assert len(manifest["labels"]) == 10
    assert manifest["rows"]["duplicate"] == 3
    assert manifest["rows"]["conflict"] == 4  # two texts, each under two labels, all dropped
    report = (out / "report.md").read_text()
    assert "Where is my refund?" in report
    assert "why is my order taking so long" in report
    assert "my card got declined when i tried to pay for the blend" in report  # near-duplicate
    rows = read_jsonl(out / "train.jsonl")
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": rows[0]["label"]}
    assert rows[0]["source"].startswith(str(demo_path()))
    assert json.loads((out / "labels.json").read_text()) == manifest["labels"]
    total = sum(manifest["splits"].values())
    assert total == manifest["rows"]["written"] == 702 - 3 - 4


def test_extraction_dataset_is_generation(tmp_path, tiny_tokenizer_dir):
    out = tmp_path / "ex"
    prepare(demo_path(EXTRACTION), "-o", out, "--tokenizer", tiny_tokenizer_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "generation" and manifest["labels"] is None
    assert not (out / "labels.json").exists()
    row = read_jsonl(out / "train.jsonl")[0]
    assert json.loads(row["messages"][-1]["content"])  # the JSON answer survived cleaning


def test_same_inputs_and_seed_give_identical_bytes(tmp_path, tiny_tokenizer_dir):
    data = write_csv(tmp_path / "d.csv", labelled_rows())
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare(data, "-o", a, "--tokenizer", tiny_tokenizer_dir)
    prepare(data, "-o", b, "--tokenizer", tiny_tokenizer_dir)
    prepare(data, "-o", c, "--tokenizer", tiny_tokenizer_dir, "--seed", "7")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "manifest.json", "report.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()


def test_split_is_stratified_and_output_refuses_overwrite(tmp_path, tiny_tokenizer_dir):
    data = write_csv(tmp_path / "d.csv", labelled_rows(per_label=20))
    out = tmp_path / "out"
    prepare(data, "-o", out, "--tokenizer", tiny_tokenizer_dir)
    for split, expected in (("train", 16), ("val", 2), ("test", 2)):
        counts = Counter(r["label"] for r in read_jsonl(out / f"{split}.jsonl"))
        assert set(counts.values()) == {expected}, (split, counts)
    again = runner.invoke(
        app, ["prepare", str(data), "-o", str(out), "--tokenizer", str(tiny_tokenizer_dir)]
    )
    assert again.exit_code == 2 and "--force" in again.output
    prepare(data, "-o", out, "--tokenizer", tiny_tokenizer_dir, "--force", "--split", "0.6,0.2,0.2")
    assert len(read_jsonl(out / "test.jsonl")) == 16


def test_near_duplicates_stay_in_one_split_and_can_be_dropped(tmp_path, tiny_tokenizer_dir):
    rows = labelled_rows()
    rows += [(rows[0][0] + "!", rows[0][1]), (rows[0][0] + " ok", rows[0][1])]
    data = write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "out"
    prepare(data, "-o", out, "--tokenizer", tiny_tokenizer_dir)
    texts = {
        s: {r["text"] for r in read_jsonl(out / f"{s}.jsonl")} for s in ("train", "val", "test")
    }
    homes = [s for s, t in texts.items() if rows[0][0] in t]
    assert len(homes) == 1 and rows[0][0] + " ok" in texts[homes[0]]
    dropped = tmp_path / "dropped"
    prepare(data, "-o", dropped, "--tokenizer", tiny_tokenizer_dir, "--near-dedup", "drop")
    manifest = json.loads((dropped / "manifest.json").read_text())
    assert manifest["rows"]["near_duplicate"] == 2


def test_given_test_file_is_kept_and_leaks_removed(tmp_path, tiny_tokenizer_dir):
    rows = labelled_rows()
    test_rows = [
        rows[0],
        (rows[13][0] + ".", rows[13][1]),
        ("a brand new sentence for label 2", "label_2"),
    ]
    data = write_csv(tmp_path / "d.csv", rows)
    test = write_csv(tmp_path / "t.csv", test_rows)
    out = tmp_path / "out"
    prepare(data, "--test", test, "-o", out, "--tokenizer", tiny_tokenizer_dir)
    assert [r["text"] for r in read_jsonl(out / "test.jsonl")] == [t for t, _ in test_rows]
    pool = {r["text"] for s in ("train", "val") for r in read_jsonl(out / f"{s}.jsonl")}
    assert rows[0][0] not in pool and rows[13][0] not in pool
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["leaked_into_test"] == 2
    assert "Leakage into the test file (2 removed" in (out / "report.md").read_text()


def test_conflict_policies_through_cli(tmp_path, tiny_tokenizer_dir):
    rows = [
        *labelled_rows(),
        ("shared text", "label_0"),
        ("shared text", "label_0"),
        ("shared text", "label_1"),
    ]
    data = write_csv(tmp_path / "d.csv", rows)
    for policy, kept in (("drop", 0), ("majority", 1), ("keep", 2)):
        out = tmp_path / policy
        prepare(data, "-o", out, "--tokenizer", tiny_tokenizer_dir, "--conflicts", policy)
        all_rows = [r for s in ("train", "val", "test") for r in read_jsonl(out / f"{s}.jsonl")]
        assert sum(r["text"] == "shared text" for r in all_rows) == kept, policy
        assert "shared text" in (out / "report.md").read_text()


def test_formats_and_options(tmp_path, tiny_tokenizer_dir):
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_text(
        "".join(
            json.dumps({"instruction": f"Say {i}", "input": "", "output": f"n{i}"}) + "\n"
            for i in range(12)
        )
    )
    out = tmp_path / "out"
    prepare(
        alpaca,
        "-o",
        out,
        "--tokenizer",
        tiny_tokenizer_dir,
        "--system",
        "Be terse.",
        "--template",
        "Q: {text}",
    )
    row = read_jsonl(out / "train.jsonl")[0]
    assert row["messages"][0] == {"role": "system", "content": "Be terse."}
    assert row["messages"][1]["content"].startswith("Q: Say ")
    tsv = tmp_path / "p.tsv"
    tsv.write_text("q\ta\n" + "".join(f"question {i}\tanswer {i}\n" for i in range(10)))
    prepare(
        tsv,
        "-o",
        tmp_path / "tsv",
        "--tokenizer",
        tiny_tokenizer_dir,
        "--prompt-col",
        "q",
        "--response-col",
        "a",
    )
    assert read_jsonl(tmp_path / "tsv" / "train.jsonl")[0]["messages"][-1]["content"].startswith(
        "answer"
    )


def test_hf_local_dataset(tmp_path, tiny_tokenizer_dir):
    datasets = pytest.importorskip("datasets")
    texts, labels = zip(*labelled_rows(), strict=True)
    datasets.Dataset.from_dict({"text": list(texts), "label": list(labels)}).save_to_disk(
        tmp_path / "ds"
    )
    out = tmp_path / "out"
    prepare(f"hf:{tmp_path / 'ds'}", "-o", out, "--tokenizer", tiny_tokenizer_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["read"] == len(texts) and len(manifest["labels"]) == 4


def test_preview_shows_rendered_examples_without_writing(tmp_path, tiny_tokenizer_dir):
    data = write_csv(tmp_path / "d.csv", labelled_rows())
    result = prepare(data, "--preview", "2", "--tokenizer", tiny_tokenizer_dir)
    assert result.output.count("trained") == 2
    assert "label_0<|im_end|>" in result.output
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def test_banking77_prepare(tmp_path, banking77_csv, tiny_tokenizer_dir):
    out = tmp_path / "b77"
    prepare(
        banking77_csv,
        "--text-col",
        "text",
        "--label-col",
        "category",
        "-o",
        out,
        "--tokenizer",
        tiny_tokenizer_dir,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["labels"]) == 77
    assert manifest["rows"]["read"] == 10_003
    assert manifest["rows"]["duplicate"] >= 1
    sizes = manifest["splits"]
    total = sum(sizes.values())
    assert abs(sizes["train"] / total - 0.8) < 0.01 and abs(sizes["test"] / total - 0.1) < 0.01
    report = (out / "report.md").read_text()
    assert "Near-duplicates" in report and "different labels" in report


def test_force_never_replaces_a_directory_holding_an_input(tmp_path, tiny_tokenizer_dir):
    (tmp_path / "in").mkdir()
    data = write_csv(tmp_path / "in" / "data.csv", labelled_rows())
    (tmp_path / "in" / "other.txt").write_text("mine")
    for out in (tmp_path / "in", tmp_path):
        result = runner.invoke(
            app,
            [
                "prepare",
                str(data),
                "-o",
                str(out),
                "--tokenizer",
                str(tiny_tokenizer_dir),
                "--force",
            ],
        )
        assert result.exit_code == 2, result.output
        assert "holds the input" in " ".join(result.output.split())
    assert (tmp_path / "in" / "other.txt").read_text() == "mine" and data.is_file()


def test_bad_option_values_name_the_option(tmp_path, tiny_tokenizer_dir):
    data = write_csv(tmp_path / "data.csv", labelled_rows())
    for args, option in [
        (["--max-tokens", "0"], "--max-tokens:"),
        (["--split", "0,0.5,0.5"], "--split:"),
    ]:
        result = runner.invoke(
            app,
            [
                "prepare",
                str(data),
                "-o",
                str(tmp_path / "out"),
                "--tokenizer",
                str(tiny_tokenizer_dir),
                *args,
            ],
        )
        assert result.exit_code == 2 and option in result.output, result.output
        assert "max_tokens" not in result.output and "field" not in result.output
