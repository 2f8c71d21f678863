"""`--to gguf`: written with the gguf package, read back with transformers' GGUF loader."""

from __future__ import annotations

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.errors import TuneforgeError
from tuneforge.export.gguf_writer import QUANT_TYPES, check_readback_config, write_gguf
from tuneforge.models.tokenizer import prepare_tokenizer

TEXT = "<|im_start|>user\nWhat is oak? item 7 please<|im_end|>\n<|im_start|>assistant\ntree"


def _read_back(path):
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _fields(path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {
        k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.t")
    }


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prepare_tokenizer(tokenizer)
    return model, tokenizer


def test_f32_round_trip_is_exact(tiny_llama, tmp_path, logits):
    model, tokenizer = tiny_llama
    path = write_gguf(model, tokenizer, tmp_path / "m.gguf", "f32").path
    back, back_tokenizer = _read_back(path)
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    assert torch.equal(logits(back, ids), logits(model, ids))
    assert back_tokenizer(TEXT, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert back_tokenizer.chat_template == tokenizer.chat_template
    fields = _fields(path)
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.add_bos_token"] is False  # the template writes specials itself
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("quant", "limit"),
    [("f16", 2e-3), ("bf16", 2e-2), ("q8_0", 2e-2), ("q5_1", 0.1), ("q5_0", 0.1),
     ("q4_1", 0.2), ("q4_0", 0.2)],
)  # fmt: skip
def test_every_quant_type_reads_back_close(tiny_llama, tmp_path, logits, quant, limit):
    model, tokenizer = tiny_llama
    result = write_gguf(model, tokenizer, tmp_path / f"m-{quant}.gguf", quant)
    matrices = QUANT_TYPES[quant][0]
    assert result.tensor_types.get(matrices, 0) >= 14  # every projection matrix
    assert set(result.tensor_types) <= {matrices, "F32", "Q8_0"}  # norms stay f32
    back, _ = _read_back(result.path)
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    diff = (logits(back, ids) - logits(model, ids)).abs().max().item()
    assert 0 < diff < limit


def test_gguf_f16_export_of_a_run_matches_the_adapter(tiny_run, export, tmp_path, logits):
    from tuneforge.models.trained import load_trained

    run = tiny_run("classification", "lora")
    model, tokenizer, _ = load_trained(run)
    result = export(run, "gguf", tmp_path / "gguf")
    assert result.metadata["quant"] == "f16" and "model-f16.gguf" in result.files
    back, _ = _read_back(result.out / "model-f16.gguf")
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    assert (logits(back, ids) - logits(model, ids)).abs().max() < 2e-3
    check = result.validation
    assert check.passed and check.agreement == 1.0
    assert check.tokenizer_agreement == 1.0 and check.chat_template_equal is True
    assert result.metadata["gguf"]["tokenizer_from"] == "hf tokenizer"


def test_gguf_q8_0_agreement(tiny_run, export, tmp_path):
    result = export(tiny_run("generation", "lora"), "gguf", tmp_path / "q8", quant="q8_0")
    check = result.validation
    assert check.min_agreement == 0.99 and check.agreement >= 0.99 and check.passed
    # Q8_0 moves logits by ~0.005 here; on a tiny random model that can flip one near-tied
    # token of the ~100 compared, so allow one, and bound the logit error itself.
    assert check.token_agreement >= 0.98 and 0 < check.max_logit_diff < 0.05
    assert result.metadata["gguf"]["tensor_types"]["Q8_0"] >= 14


def test_tokenizer_metadata_is_copied_from_a_gguf_base(tiny_run, export, tmp_path):
    from tuneforge.export.tiny_gguf import write_tiny_gguf

    base = write_tiny_gguf(tmp_path / "base" / "tiny.gguf")
    run = tiny_run("classification", "lora", model=base)
    result = export(run, "gguf", tmp_path / "gguf", quant="q8_0")
    assert result.metadata["gguf"]["tokenizer_from"] == "source gguf"
    written = _fields(result.out / "model-q8_0.gguf")
    assert written["tokenizer.ggml.pre"] == _fields(base)["tokenizer.ggml.pre"]
    assert result.validation.passed and result.validation.tokenizer_agreement == 1.0


def _tiny_gemma(directory, *, query_pre_attn_scalar: int):
    """A tiny Gemma 3 as GGUF readers assume it: query_pre_attn_scalar == head_dim == 256."""
    from transformers import Gemma3TextConfig

    from tuneforge.models.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer("gemma")
    prepare_tokenizer(tokenizer)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=256, sliding_window=64,
        query_pre_attn_scalar=query_pre_attn_scalar, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, architectures=["Gemma3ForCausalLM"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # random norms, so the +1 / -1 round trip is really exercised
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model, tokenizer


def test_gemma3_round_trip(tmp_path, logits):
    model, tokenizer = _tiny_gemma(tmp_path, query_pre_attn_scalar=256)
    path = write_gguf(model, tokenizer, tmp_path / "g.gguf", "f32").path
    assert _fields(path)["general.architecture"] == "gemma3"
    check_readback_config(model.config, path)
    back, back_tokenizer = _read_back(path)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert back_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert back_tokenizer.chat_template == tokenizer.chat_template
    tensor = torch.tensor([ids])
    assert (logits(back, tensor) - logits(model, tensor)).abs().max() < 1e-4


def test_gemma3_config_gguf_cannot_express_fails_clearly(tmp_path):
    model, tokenizer = _tiny_gemma(tmp_path, query_pre_attn_scalar=64)
    path = write_gguf(model, tokenizer, tmp_path / "g.gguf", "f32").path
    with pytest.raises(TuneforgeError, match="query_pre_attn_scalar: 64 in the model"):
        check_readback_config(model.config, path)


def test_unsupported_architecture_and_quant(tmp_path, tiny_llama):
    from transformers import GPT2Config, GPT2LMHeadModel

    model, tokenizer = tiny_llama
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer)))
    with pytest.raises(TuneforgeError, match=r"architecture 'gpt2' is not supported"):
        write_gguf(gpt2, tokenizer, tmp_path / "x.gguf")
    with pytest.raises(TuneforgeError, match="llama-quantize"):
        write_gguf(model, tokenizer, tmp_path / "y.gguf", "q4_k_m")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "y.gguf").exists()
