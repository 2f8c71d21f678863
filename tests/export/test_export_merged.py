"""`--to merged` and `--to int4`: the merge computes what the adapter computed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from tuneforge.errors import TuneforgeError
from tuneforge.export.merge import merged_model
from tuneforge.models.trained import inspect_run, load_trained


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3"])
def test_merged_logits_equal_adapter_logits(tiny_run, sample_ids, logits, kind):
    run = tiny_run("classification", kind)
    model, _, _ = load_trained(run)
    base_logits = None
    with model.disable_adapter():
        base_logits = logits(model, sample_ids)
    adapter_logits = logits(model, sample_ids)
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # the adapter really changes them
    merged = merged_model(model, inspect_run(run))
    assert not hasattr(merged, "peft_config")
    assert (logits(merged, sample_ids) - adapter_logits).abs().max() <= 1e-4


def test_merged_export_reloads_with_transformers(tiny_run, export, tmp_path, sample_ids, logits):
    run = tiny_run("classification", "lora")
    model, _, _ = load_trained(run)
    reference = logits(model, sample_ids)
    result = export(run, "merged", tmp_path / "merged")
    out = result.out
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= set(
        result.files
    )
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644  # shareable
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert (logits(reloaded, sample_ids) - reference).abs().max() <= 1e-4
    check = result.validation
    assert check.passed and check.agreement == 1.0 and check.token_agreement == 1.0
    assert check.max_logit_diff <= 1e-4
    assert check.trained_accuracy is not None and check.export_accuracy == check.trained_accuracy
    meta = json.loads((out / "tuneforge.json").read_text())
    assert meta["format"] == "merged" and meta["dtype"] == "float32"
    assert meta["validation"]["passed"] is True
    # Stop tokens travel with the weights: generation stops at the template's turn end.
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] is not None


def test_merged_dtype_is_selectable(tiny_run, export, tmp_path):
    result = export(
        tiny_run("classification", "lora"), "merged", tmp_path / "bf16", dtype="bfloat16"
    )
    with safe_open(result.out / "model.safetensors", "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert result.validation.passed


def test_qlora_merges_onto_the_dequantized_base(tiny_run, export, tmp_path):
    run = tiny_run("generation", "qlora")
    result = export(run, "merged", tmp_path / "qlora-merged")
    config = json.loads((result.out / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float model
    check = result.validation
    # Measured against the 4-bit base + adapter it was trained as.
    assert check.passed and check.agreement == 1.0
    assert 0 < check.max_logit_diff < 1e-2
    meta = json.loads((result.out / "tuneforge.json").read_text())
    assert meta["run"]["method"] == "qlora" and "agreement" in meta["validation"]
    assert "dequantized" in meta["merge_note"]
    assert "dequantized" in (result.out / "MODEL_CARD.md").read_text()


def test_full_fine_tune_exports_merged_but_has_no_adapter(tiny_run, export, tmp_path):
    run = tiny_run("classification", "full")
    assert export(run, "merged", tmp_path / "full").validation.passed
    with pytest.raises(TuneforgeError, match="full fine-tune"):
        export(run, "adapter", tmp_path / "adapter")


def test_prompt_tuning_cannot_merge_but_exports_as_adapter(tiny_run, export, tmp_path):
    run = tiny_run("classification", "prompt_tuning")
    with pytest.raises(TuneforgeError, match="cannot be merged"):
        export(run, "gguf", tmp_path / "gguf")
    assert not (tmp_path / "gguf").exists()
    result = export(run, "adapter", tmp_path / "adapter")
    assert result.validation.passed and result.validation.max_logit_diff == 0
    assert not result.metadata["vllm"]["loadable"]


def test_int4_export_is_bitsandbytes_nf4_and_reloads(tiny_run, export, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = export(tiny_run("classification", "lora"), "int4", tmp_path / "int4")
    config = json.loads((result.out / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["quant_method"] == "bitsandbytes" and quant["bnb_4bit_quant_type"] == "nf4"
    reloaded = AutoModelForCausalLM.from_pretrained(result.out, device_map={"": "cpu"})
    assert type(reloaded.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    check = result.validation
    assert check.min_agreement == 0.90 and check.passed
    assert check.max_logit_diff > 0  # 4 bits are lossy; the figure is reported, not hidden
