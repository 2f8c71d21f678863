"""`--to adapter`: the PEFT adapter, tokenizer + template, MODEL_CARD.md, tuneforge.json, vLLM."""

from __future__ import annotations

import json

from tuneforge.fsutil import sha256_file


def test_adapter_export_contents(tiny_run, export, tmp_path):
    run = tiny_run("classification", "lora")
    result = export(run, "adapter", tmp_path / "adapter", name="Support Intents!")
    out = result.out
    for name in (
        "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "chat_template.jinja", "MODEL_CARD.md", "tuneforge.json",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "adapter_model.safetensors").read_bytes() == (
        run / "adapter_model.safetensors"
    ).read_bytes()
    assert (out / "chat_template.jinja").read_text() == (run / "chat_template.jinja").read_text()
    check = result.validation
    assert check.passed and check.agreement == 1.0 and check.max_logit_diff == 0.0

    meta = json.loads((out / "tuneforge.json").read_text())
    assert meta["format"] == "adapter" and meta["name"] == "support-intents"
    assert meta["run"]["task"] == "classification" and meta["run"]["labels"]
    assert meta["base_model"]["sha256"] == sha256_file(
        meta["base_model"]["path"] + "/model.safetensors"
    )
    assert meta["dataset"]["train_sha256"] == sha256_file(
        run.parent / "data-classification" / "train.jsonl"
    )
    assert meta["training"]["config"]["method"]["kind"] == "lora"
    assert meta["files"]["adapter_model.safetensors"]["sha256"] == sha256_file(
        out / "adapter_model.safetensors"
    )
    assert meta["vllm"]["loadable"] is True
    assert "--enable-lora --lora-modules support-intents=" in meta["vllm"]["command"]
    assert "--max-lora-rank 16" not in meta["vllm"]["command"]  # r=16 is vLLM's default

    card = (out / "MODEL_CARD.md").read_text()
    for text in (
        "## Base model", meta["base_model"]["sha256"], meta["dataset"]["train_sha256"],
        "method `lora`, r=16, alpha=32", "Not evaluated", "## Known failure modes",
        "prediction agreement: 100.0 %", "Classification into 4 labels", "## Intended use",
        "## License", "vllm serve",
    ):  # fmt: skip
        assert text in card, text


def test_model_card_reports_eval_metrics_confusions_and_forgetting(
    tiny_run, export, copy_run, tmp_path
):
    from tuneforge.eval.run import evaluate

    run = copy_run(tiny_run("classification", "lora"))
    results = evaluate(
        run, None, baselines=["zero"], forgetting=True, variation=False, log=lambda _: None
    )
    card = (export(run, "adapter", tmp_path / "adapter").out / "MODEL_CARD.md").read_text()
    tuned = results["variants"]["tuned"]
    lo, hi = tuned["accuracy_ci"]
    assert f"| tuned | {100 * tuned['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] |" in card
    assert "| base_zero |" in card and "Not evaluated" not in card
    for confusion in results["confusions"][:5]:
        assert f"`{confusion['gold']}` predicted as `{confusion['pred']}`" in card
    forgetting = results["forgetting"]
    assert f"base {100 * forgetting['base']['score']:.1f} %" in card


def test_dora_adapter_warns_that_vllm_cannot_load_it(tiny_run, cli, tmp_path):
    out = tmp_path / "dora"
    result = cli(tiny_run("classification", "dora"), "--to", "adapter", "-o", out)
    assert result.exit_code == 0, result.output
    assert "not loadable by vLLM" in result.stderr and "DoRA" in result.stderr
    assert "vllm serve " in result.output and "--enable-lora" in result.output
    meta = json.loads((out / "tuneforge.json").read_text())
    assert meta["vllm"]["loadable"] is False and meta["warnings"]


def test_cli_reports_files_and_agreement(tiny_run, cli, tmp_path):
    out = tmp_path / "gguf"
    result = cli(tiny_run("classification", "lora"), "--to", "gguf", "--quant", "q8_0", "-o", out)
    assert result.exit_code == 0, result.output
    assert "model-q8_0.gguf" in result.output and "validated" in result.output
    assert "agreement 100.0 % of 12 rows" in result.output
    assert f"exported gguf -> {out}/" in result.output
