"""load_model / load_tokenizer on HF directories, dtypes, 4-bit, devices and the offline hub."""

from __future__ import annotations

import time

import pytest
import torch

from tuneforge.config import ModelConfig
from tuneforge.errors import TuneforgeError
from tuneforge.models import load as load_module
from tuneforge.models.load import load_model, load_tokenizer, resolve_dtype


def test_directory_load_with_info(tiny_llama_dir):
    model, tokenizer, info = load_model(ModelConfig(name=str(tiny_llama_dir)))
    assert info.source_kind == "directory" and info.path == info.weights_dir == str(tiny_llama_dir)
    assert info.sha256 is None and info.from_cache is None
    assert info.dtype == "float32" and info.device == "cpu" and info.quantization == "none"
    assert info.template_source == "model" and info.chat_template == tokenizer.chat_template
    assert set(info.to_dict()) >= {"source_kind", "path", "sha256", "chat_template"}
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    # pad falls back to eos; generation pads with it and stops at the turn end
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_gemma_base_gets_fallback_template_and_stops_on_end_of_turn(tiny_gemma_dir):
    model, tokenizer, info = load_model(ModelConfig(name=str(tiny_gemma_dir)))
    assert info.template_source == "fallback-gemma"
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, end_of_turn]


def test_chat_template_file_from_config(tiny_llama_dir, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    _, tokenizer, info = load_model(ModelConfig(name=str(tiny_llama_dir), chat_template=str(path)))
    assert info.template_source == "file" and tokenizer.chat_template == path.read_text()


@pytest.mark.parametrize(
    ("name", "device", "expected"),
    [
        ("auto", "cpu", torch.float32),
        ("auto", "cuda", torch.bfloat16),
        ("bfloat16", "cpu", torch.bfloat16),
        ("float16", "cpu", torch.float16),
    ],
)
def test_resolve_dtype(name, device, expected):
    assert resolve_dtype(name, device) == expected


def test_explicit_dtype_is_applied(tiny_llama_dir):
    model, _, info = load_model(ModelConfig(name=str(tiny_llama_dir), dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16 and info.dtype == "bfloat16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_tuneforge_error(tiny_llama_dir):
    with pytest.raises(TuneforgeError, match="CUDA is not available"):
        load_model(ModelConfig(name=str(tiny_llama_dir)), device="cuda")


@pytest.mark.parametrize("quant", ["nf4", "fp4"])
def test_four_bit_load_on_cpu(tiny_llama_dir, quant):
    pytest.importorskip("bitsandbytes")
    model, _, info = load_model(ModelConfig(name=str(tiny_llama_dir)), quantization=quant)
    layer = model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "Linear4bit"
    assert layer.weight.quant_state.quant_type == quant
    assert layer.weight.quant_state.nested  # double quantization on by default
    assert model.is_loaded_in_4bit and info.quantization == quant
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_directory_without_tokenizer_is_explained(tmp_path, tiny_llama_dir):
    (tmp_path / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    with pytest.raises(TuneforgeError, match="no tokenizer files"):
        load_tokenizer(str(tmp_path))


def test_unknown_architecture_is_a_tuneforge_error(tmp_path, fresh_tokenizer):
    fresh_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(TuneforgeError, match="no-such-architecture"):
        load_model(ModelConfig(name=str(tmp_path)))


def test_offline_hub_fails_fast_with_advice(monkeypatch):
    monkeypatch.setattr(load_module, "hub_is_reachable", lambda: False)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-tuneforge-hub-cache")
    started = time.perf_counter()
    with pytest.raises(TuneforgeError) as info:
        load_model(ModelConfig(name="someone/not-cached-model"))
    message = str(info.value)
    assert "hub is unreachable" in message and "local model directory" in message
    assert "smollm2-135m" in message
    assert time.perf_counter() - started < 10  # no retry-with-backoff loop


def test_load_tokenizer_on_a_directory_is_prepared(tiny_gemma_dir):
    tokenizer = load_tokenizer(str(tiny_gemma_dir))
    assert tokenizer.pad_token == "<eos>" and "<start_of_turn>" in tokenizer.chat_template


def test_corrupt_model_directories_are_tuneforge_errors(tmp_path, tiny_llama_dir):
    import shutil

    not_an_object = tmp_path / "list-config"
    shutil.copytree(tiny_llama_dir, not_an_object)
    (not_an_object / "config.json").write_text("[1, 2]")
    torn = tmp_path / "torn-weights"
    shutil.copytree(tiny_llama_dir, torn)
    (torn / "model.safetensors").write_bytes(b"\x00" * 1000)
    for directory, reason in [(not_an_object, "TypeError"), (torn, "SafetensorError")]:
        with pytest.raises(TuneforgeError, match=f"cannot load from .*{reason}"):
            load_model(ModelConfig(name=str(directory)))


def test_truncated_gguf_is_a_tuneforge_error(tmp_path, tiny_gguf, isolated_cache):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:15])  # the magic and version, then nothing
    with pytest.raises(TuneforgeError, match=r"cut\.gguf: cannot read"):
        load_model(ModelConfig(name=str(cut)))
