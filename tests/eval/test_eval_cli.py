"""`tuneforge eval` end to end on tiny runs: the report, and bad inputs (exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyword_task import train_tiny_run, write_jsonl, write_split
from tuneforge.cli.main import app

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_cache")


def make_run(root: Path, model_dir: Path, task: str, kind: str = "lora") -> Path:
    data = write_split(root / f"data-{task}", task, gen_system="Answer in JSON.")
    return train_tiny_run(root / f"run-{task}-{kind}", model_dir, data, f"method.kind={kind}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_CACHE", str(root / "cache"))
        return {
            "classification": make_run(root, tiny_model_dir, "classification"),
            "generation": make_run(root, tiny_model_dir, "generation"),
        }


def invoke(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def test_three_way_classification_report(runs, tmp_path):
    run = runs["classification"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('What is apple?\n{"prompt": "What is oak?"}\n', encoding="utf-8")
    out = tmp_path / "report"
    result = invoke(
        run, "--data", run.parent / "data-classification" / "test.jsonl", "-o", out,
        "--baselines", "zero,fewshot", "--shots", "3", "--prompts", prompts,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tuned" in result.output and "base_fewshot" in result.output
    assert f"{out}/report.md" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "classification" and metrics["n"] == 12
    assert metrics["labels"] == ["fish", "fruit", "tree", "vegetable"]
    assert set(metrics["variants"]) == {"tuned", "base_zero", "base_fewshot"}
    for variant in metrics["variants"].values():
        lo, hi = variant["accuracy_ci"]
        assert 0 <= lo <= variant["accuracy"] <= hi <= 1
        lo, hi = variant["macro_f1_ci"]
        assert 0 <= lo <= hi <= 1
        assert 0 <= variant["invalid_rate"] <= 1
        assert variant["prompt_tokens"] > 0 and variant["seconds"] >= 0
        assert variant["free_generation_seconds"] > 0  # timed apart from the label predictions
    # Few-shot prompts carry 3 examples more than zero-shot ones.
    assert (
        metrics["variants"]["base_fewshot"]["prompt_tokens"]
        > metrics["variants"]["base_zero"]["prompt_tokens"]
    )
    assert metrics["variants"]["tuned"]["output_variation"] is not None
    assert set(metrics["comparisons"]) == {"base_zero", "base_fewshot"}
    comparison = metrics["comparisons"]["base_zero"]
    assert {"p_value", "a_only", "b_only"} <= set(comparison["mcnemar"])
    assert {"diff", "lo", "hi"} == set(comparison["difference"])
    assert metrics["flipped"]["vs"] in ("base_zero", "base_fewshot")
    for example in metrics["worst"]:
        assert {"index", "text", "gold", "pred", "other_pred", "confidence"} == set(example)
        assert example["pred"] in metrics["labels"]
    assert set(metrics["perplexity"]) == {"answer", "sequence"}
    assert metrics["forgetting"]["base"]["n"] == metrics["forgetting"]["tuned"]["n"] == 50
    assert [p["prompt"] for p in metrics["prompts"]] == ["What is apple?", "What is oak?"]
    for name in (
        "report.md",
        "report.html",
        "confusion_tuned.png",
        "comparison.png",
        "predictions.jsonl",
    ):
        assert (out / name).is_file(), name
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == 12 and all(p["tuned"] in metrics["labels"] for p in predictions)
    assert not list(tmp_path.glob(".report.tmp-*"))


def test_generation_report_and_default_paths(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["generation"], run)
    result = invoke(run, "--baselines", "zero", "--no-forgetting", "--no-variation", "--limit", "5")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())  # default -o RUN/eval
    assert metrics["task"] == "generation" and metrics["labels"] is None and metrics["n"] == 5
    tuned = metrics["variants"]["tuned"]
    assert {"exact_match", "token_f1", "rouge_l", "json", "exact_match_ci", "token_f1_ci"} <= set(
        tuned
    )
    assert "field_f1_ci" in tuned["json"]
    assert tuned["free_generation_seconds"] is None  # the answers are the free generations
    assert metrics["comparisons"]["base_zero"]["metric"] == "field_f1"
    assert metrics["forgetting"] is None and metrics["prompts"] is None
    # A second run refuses to overwrite; --force replaces.
    again = invoke(run, "--baselines", "none", "--no-forgetting", "--no-variation", "--limit", "2")
    assert again.exit_code == 2 and "--force" in again.output
    forced = invoke(
        run, "--baselines", "none", "--no-forgetting", "--no-variation", "--limit", "2", "--force"
    )
    assert forced.exit_code == 0, forced.output
    assert json.loads((run / "eval" / "metrics.json").read_text())["n"] == 2


def _bad(kind: str, runs: dict[str, Path], tmp: Path) -> tuple[list, str]:
    run = runs["classification"]
    test = run.parent / "data-classification" / "test.jsonl"
    if kind == "missing_run":
        return [tmp / "nope", "--data", test], "no such directory"
    if kind == "run_without_weights":
        broken = tmp / "broken"
        shutil.copytree(run, broken)
        (broken / "adapter_model.safetensors").unlink()
        return [broken, "--data", test], "adapter_model.safetensors missing"
    if kind == "missing_data":
        return [run, "--data", tmp / "absent.jsonl"], "no such file"
    if kind == "rows_without_label":
        rows = [json.loads(line) for line in test.read_text().splitlines()]
        for r in rows[2:4]:
            del r["label"]
        return [
            run,
            "--data",
            write_jsonl(tmp / "nolabel.jsonl", rows),
        ], "have no 'label' field (examples 3, 4)"
    if kind == "unknown_labels":
        rows = [json.loads(line) for line in test.read_text().splitlines()]
        rows[0]["label"] = "mineral"
        rows[1]["label"] = "animal"
        return [run, "--data", write_jsonl(tmp / "unknown.jsonl", rows)], "'animal', 'mineral'"
    if kind == "no_answer":
        rows = [json.loads(line) for line in test.read_text().splitlines()]
        rows[0]["messages"] = rows[0]["messages"][:-1]
        return [
            run,
            "--data",
            write_jsonl(tmp / "noanswer.jsonl", rows),
        ], "noanswer.jsonl:1: must end with the assistant's answer"
    if kind == "bad_baseline":
        return [run, "--data", test, "--baselines", "zero,few"], "unknown 'few'"
    if kind == "bad_scoring":
        return [run, "--data", test, "--scoring", "fast"], "--scoring 'fast'"
    if kind == "bad_precision":
        return [run, "--data", test, "--precision", "int4"], "--precision 'int4'"
    if kind == "missing_prompts":
        return [run, "--data", test, "--prompts", tmp / "none.txt"], "--prompts"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing_run",
        "run_without_weights",
        "missing_data",
        "rows_without_label",
        "unknown_labels",
        "no_answer",
        "bad_baseline",
        "bad_scoring",
        "bad_precision",
        "missing_prompts",
    ],
)
def test_bad_inputs_exit_2_with_a_message_and_write_nothing(runs, tmp_path, kind):
    args, message = _bad(kind, runs, tmp_path)
    out = tmp_path / "out"
    result = invoke(*args, "-o", out)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_bf16_precision_is_recorded_and_agrees_on_a_confident_model(runs, tmp_path):
    run, test = runs["classification"], runs["classification"].parent / "data-classification"
    common = ["--data", test / "test.jsonl", "--baselines", "zero", "--no-forgetting"]
    auto = invoke(run, *common, "--no-variation", "-o", tmp_path / "auto")
    bf16 = invoke(run, *common, "--no-variation", "--precision", "bf16", "-o", tmp_path / "bf16")
    assert auto.exit_code == 0 and bf16.exit_code == 0, auto.output + bf16.output
    m_auto = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    m_bf16 = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert m_auto["precision"] == "float32"
    assert m_bf16["precision"].startswith("bfloat16 matmuls")
    assert "precision: bfloat16 matmuls" in (tmp_path / "bf16" / "report.md").read_text()

    def predictions(name: str) -> list[dict]:
        text = (tmp_path / name / "predictions.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    # Rounding may flip a near tie, not the model: most answers and perplexity stay put.
    pairs = zip(predictions("auto"), predictions("bf16"), strict=True)
    same = [a["tuned"] == b["tuned"] for a, b in pairs]
    assert sum(same) >= len(same) - 2
    ppl_auto, ppl_bf16 = m_auto["perplexity"]["answer"], m_bf16["perplexity"]["answer"]
    assert ppl_bf16 == pytest.approx(ppl_auto, rel=0.05) and ppl_bf16 != ppl_auto


@pytest.mark.parametrize("kind", ["qlora", "full"])
def test_bf16_precision_on_a_4bit_base_and_a_full_fine_tune(kind, tiny_model_dir, tmp_path):
    if kind == "qlora":
        pytest.importorskip("bitsandbytes")
    run = make_run(tmp_path, tiny_model_dir, "classification", kind)
    out = tmp_path / "out"
    result = invoke(
        run, "--data", tmp_path / "data-classification" / "test.jsonl", "--baselines", "zero",
        "--no-forgetting", "--no-variation", "--precision", "bf16", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"tuned", "base_zero"}
    assert metrics["precision"].startswith("bfloat16 matmuls")


def test_fewshot_needs_the_training_split(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["classification"], run)
    text = (run / "config.yaml").read_text()
    data_dir = str(runs["classification"].parent / "data-classification")
    (run / "config.yaml").write_text(text.replace(data_dir, str(tmp_path / "gone")))
    test = runs["classification"].parent / "data-classification" / "test.jsonl"
    result = invoke(run, "--data", test, "--baselines", "fewshot", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "need the run's training split" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_limit_samples_across_a_label_grouped_file():
    from tuneforge.eval.inputs import sample_indices

    labels = [i // 100 for i in range(1000)]  # a file sorted by label, 10 labels
    keep = sample_indices(len(labels), 50)
    assert len(keep) == 50 and keep == sorted(set(keep))
    assert len({labels[i] for i in keep}) >= 8  # the first 50 rows would hold one label
    assert keep == sample_indices(len(labels), 50)  # seeded
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4]


def test_classic_column_and_its_chosen_c_in_the_report(runs, tmp_path, monkeypatch):
    from tuneforge.eval import baselines

    seen = {}

    def fake_classic(train_texts, train_labels, test_texts):
        seen["train"] = len(train_texts)
        # every test row gets the most frequent training label
        label = max(set(train_labels), key=list(train_labels).count)
        return [label] * len(test_texts), [0.5] * len(test_texts), "C=10 by cross-validation"

    monkeypatch.setattr(baselines, "classic_baseline", fake_classic)
    out = tmp_path / "out"
    result = invoke(
        runs["classification"], "--baselines", "classic", "--no-forgetting", "--no-variation",
        "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "classic" in metrics["variants"] and seen["train"] > 0
    assert "classic: C=10 by cross-validation" in metrics["notes"]
    assert "classic: C=10 by cross-validation" in (out / "report.md").read_text()


def test_force_never_replaces_the_run_or_its_data(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["classification"], run)
    data = runs["classification"].parent / "data-classification" / "test.jsonl"
    before = sorted(p.name for p in run.iterdir())
    for out in (run, tmp_path, data.parent):
        result = invoke(run, "--data", data, "--baselines", "none", "-o", out, "--force")
        assert result.exit_code == 2, result.output
        assert "holds the input" in " ".join(result.output.split())
    assert sorted(p.name for p in run.iterdir()) == before and data.is_file()
