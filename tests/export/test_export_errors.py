"""Bad input gives one clear message and exit 2, and leaves nothing; a failed check exits 3."""

from __future__ import annotations

import json

import pytest


def _only(tmp_path, *names):
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in names)


def test_missing_run_directory(cli, tmp_path):
    result = cli(tmp_path / "nope", "--to", "gguf", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "run directory" in result.stderr and "no such directory" in result.stderr
    assert not (tmp_path / "out").exists()


def test_not_a_run_directory(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli(tmp_path / "empty", "--to", "merged", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "config.yaml is missing" in result.stderr


def test_corrupt_adapter_file(tiny_run, cli, copy_run, tmp_path):
    run = copy_run(tiny_run("classification", "lora"))
    (run / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    result = cli(run, "--to", "merged", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "cannot load the adapter" in result.stderr and str(run) in result.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left


def test_missing_adapter_weights(tiny_run, cli, copy_run, tmp_path):
    run = copy_run(tiny_run("classification", "lora"))
    (run / "adapter_model.safetensors").unlink()
    result = cli(run, "--to", "adapter", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "adapter_model.safetensors missing" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "onnx"], "--to 'onnx': expected one of adapter, merged, int4, gguf, ollama"),
        (["--to", "gguf", "--quant", "q4_k_m"], "llama-quantize"),
        (["--to", "int4", "--quant", "q8_0"], "expected nf4 or fp4"),
        (["--to", "adapter", "--quant", "q8_0"], "--quant applies to --to int4|gguf|ollama"),
        (["--to", "gguf", "--dtype", "float16"], "--dtype applies to --to merged only"),
        (["--to", "merged", "--dtype", "int8"], "--dtype 'int8'"),
        (["--to", "merged", "--validate-rows", "0"], "--validate-rows must be at least 1"),
        (["--to", "merged", "--min-agreement", "1.5"], "--min-agreement must be between 0 and 1"),
        (["--to", "merged", "--data", "/nonexistent.jsonl"], "--data /nonexistent.jsonl: no such"),
    ],
)
def test_bad_options(tiny_run, cli, tmp_path, args, message):
    result = cli(tiny_run("classification", "lora"), *args, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(tiny_run, cli, tmp_path):
    run = tiny_run("classification", "lora")
    (tmp_path / "out").mkdir()
    result = cli(run, "--to", "merged", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "already exists" in result.stderr
    result = cli(run, "--to", "merged", "-o", tmp_path / "out", "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_validation_data_is_required_without_a_test_split(tiny_run, cli, copy_run, tmp_path):
    run = copy_run(tiny_run("classification", "lora"))
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("dir: ", "dir: /gone/", 1))
    result = cli(run, "--to", "merged", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--data is required" in result.stderr
    data = tiny_run("classification", "lora").parent / "data-classification" / "test.jsonl"
    result = cli(run, "--to", "merged", "-o", tmp_path / "out", "--data", data)
    assert result.exit_code == 0, result.output


def test_failed_validation_exits_3_and_keeps_a_marked_copy(tiny_run, cli, tmp_path, monkeypatch):
    """A merge that silently changes the model (here: one weight scaled) must not pass."""
    from tuneforge.export import merge

    original = merge.save_merged

    def broken_merge(model, tokenizer, out, dtype="float32"):
        with __import__("torch").no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(40.0)
        original(model, tokenizer, out, dtype)

    monkeypatch.setattr(merge, "save_merged", broken_merge)
    out = tmp_path / "out"
    result = cli(tiny_run("generation", "lora"), "--to", "merged", "-o", out)
    assert result.exit_code == 3, result.output
    assert "does not behave like the trained model" in result.stderr
    assert not out.exists()
    failed = tmp_path / "out.failed-validation"
    meta = json.loads((failed / "tuneforge.json").read_text())
    assert meta["validation"]["passed"] is False and meta["validation"]["agreement"] < 0.99
    assert meta["validation"]["disagreements"]
    assert _only(tmp_path) == ["out.failed-validation"]


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("bad name/../x", "bad-name-x"),
        ("My Model v1.2", "my-model-v1.2"),
        ("../..", "tuneforge-model"),
    ],
)
def test_model_names_are_what_ollama_accepts(given, name):
    from tuneforge.export.run import _model_name

    assert _model_name(given) == name


def test_force_never_replaces_the_run_being_exported(tiny_run, cli, copy_run):
    run = copy_run(tiny_run("classification", "lora"))
    before = sorted(p.name for p in run.iterdir())
    for out in (run, run.parent):
        result = cli(run, "--to", "adapter", "-o", out, "--force")
        assert result.exit_code == 2, result.output
        assert "holds the input" in " ".join(result.stderr.split())
    assert sorted(p.name for p in run.iterdir()) == before
