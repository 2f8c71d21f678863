"""Every fine-tuning method attaches, trains (falling loss), and counts its parameters."""

from __future__ import annotations

import pytest
import torch

from tuneforge.config import MethodConfig, ModelConfig
from tuneforge.errors import TuneforgeError
from tuneforge.models.adapters import (
    attach_method,
    count_parameters,
    ia3_targets,
    learning_rate_warning,
    linear_module_names,
)
from tuneforge.models.load import load_model

# Soft prompts and IA3 train few parameters and need a larger step to move in 5 steps.
_LR = {
    "full": 1e-3,
    "lora": 1e-3,
    "qlora": 1e-3,
    "dora": 1e-3,
    "ia3": 3e-2,
    "prompt_tuning": 3e-2,
    "prefix_tuning": 3e-2,
}
ALL_KINDS = list(_LR)


def _load(directory, method: MethodConfig):
    if method.quantization != "none":
        pytest.importorskip("bitsandbytes")
    model, tokenizer, _ = load_model(
        ModelConfig(name=str(directory)), quantization=method.quantization
    )
    return model, tokenizer


def _train_steps(model, tokenizer, lr: float, steps: int = 5) -> list[float]:
    torch.manual_seed(0)
    batch = tokenizer(
        ["hello world, how are you?", "the quick brown fox jumps"],
        padding=True,
        return_tensors="pt",
    )
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_method_trains_on_cpu(tiny_llama_dir, kind):
    method = MethodConfig(
        kind=kind, prompt_init_text="Answer briefly." if kind == "prompt_tuning" else None
    )
    model, tokenizer = _load(tiny_llama_dir, method)
    _, base_total = count_parameters(model)
    model = attach_method(model, method)
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    if kind == "full":
        assert trainable == total == base_total
    else:
        assert trainable < base_total  # adapters train a small fraction
    losses = _train_steps(model, tokenizer, _LR[kind])
    assert losses[-1] < losses[0], losses


def test_gemma_architecture_trains_with_lora(tiny_gemma_dir):
    method = MethodConfig(kind="lora")
    model, tokenizer = _load(tiny_gemma_dir, method)
    losses = _train_steps(attach_method(model, method), tokenizer, 1e-3)
    assert losses[-1] < losses[0]


def test_qlora_counts_packed_4bit_weights_as_full_parameters(tiny_llama_dir):
    plain, _ = _load(tiny_llama_dir, MethodConfig(kind="lora"))
    _, plain_total = count_parameters(plain)
    lora_trainable, _ = count_parameters(attach_method(plain, MethodConfig(kind="lora")))

    method = MethodConfig(kind="qlora")
    quantized, _ = _load(tiny_llama_dir, method)
    assert count_parameters(quantized)[1] == plain_total  # not the packed uint8 count
    trainable, total = count_parameters(attach_method(quantized, method))
    assert (trainable, total) == (lora_trainable, plain_total + lora_trainable)


def test_rslora_and_dora_reach_peft(tiny_llama_dir):
    model, _ = _load(tiny_llama_dir, MethodConfig())
    peft_model = attach_method(model, MethodConfig(kind="dora", rslora=True, r=4, alpha=8))
    config = peft_model.peft_config["default"]
    assert config.use_dora and config.use_rslora and config.r == 4


def test_explicit_target_modules_list_and_comma_string(tiny_llama_dir):
    for targets in (["q_proj", "v_proj"], "q_proj, v_proj"):
        model, _ = _load(tiny_llama_dir, MethodConfig())
        peft_model = attach_method(model, MethodConfig(kind="lora", target_modules=targets))
        assert set(peft_model.peft_config["default"].target_modules) == {"q_proj", "v_proj"}


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_unknown_target_module_lists_the_models_layers(tiny_llama_dir, kind):
    model, _ = _load(tiny_llama_dir, MethodConfig())
    with pytest.raises(TuneforgeError) as info:
        attach_method(model, MethodConfig(kind=kind, target_modules=["q_proj", "query_key_value"]))
    message = str(info.value)
    assert "'query_key_value'" in message and "'q_proj'" not in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in message


def test_unknown_modules_to_save_is_explained(tiny_llama_dir):
    model, _ = _load(tiny_llama_dir, MethodConfig())
    with pytest.raises(TuneforgeError, match=r"modules_to_save.*'score'"):
        attach_method(model, MethodConfig(kind="lora", modules_to_save=["score"]))


def test_ia3_defaults_per_architecture(tiny_llama_dir, tiny_gemma_dir):
    llama, _ = _load(tiny_llama_dir, MethodConfig())
    assert ia3_targets(llama, "all-linear") == (["k_proj", "v_proj", "down_proj"], ["down_proj"])
    gemma, _ = _load(tiny_gemma_dir, MethodConfig())
    targets, feedforward = ia3_targets(gemma, "all-linear")
    assert "down_proj" in targets and feedforward == ["down_proj"]
    assert ia3_targets(llama, ["v_proj", "down_proj"]) == (["v_proj", "down_proj"], ["down_proj"])


def test_linear_module_names_exclude_nothing_real(tiny_llama_dir):
    model, _ = _load(tiny_llama_dir, MethodConfig())
    assert linear_module_names(model) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
    ]  # fmt: skip


def test_qlora_needs_a_4bit_base(tiny_llama_dir):
    model, _ = _load(tiny_llama_dir, MethodConfig())
    with pytest.raises(TuneforgeError, match="needs a 4-bit base"):
        attach_method(model, MethodConfig(kind="qlora"))


def test_full_refuses_a_4bit_base(tiny_llama_dir):
    model, _ = _load(tiny_llama_dir, MethodConfig(kind="qlora"))
    with pytest.raises(TuneforgeError, match="cannot train a 4-bit base"):
        attach_method(model, MethodConfig(kind="full"))


@pytest.mark.parametrize("kind", ["full", "lora", "qlora"])
def test_gradient_checkpointing_still_trains(tiny_llama_dir, kind):
    method = MethodConfig(kind=kind)
    model, tokenizer = _load(tiny_llama_dir, method)
    model = attach_method(model, method, gradient_checkpointing=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flag = getattr(type(base), "is_activation_checkpointing", None)
    assert (flag.fget(base) if flag is not None else base.is_gradient_checkpointing) is True
    losses = _train_steps(model, tokenizer, 1e-3, steps=3)
    assert losses[-1] < losses[0]


def test_learning_rate_warnings():
    assert "high for full fine-tuning" in learning_rate_warning(MethodConfig(kind="full"), 2e-4)
    assert learning_rate_warning(MethodConfig(kind="full"), 2e-5) is None
    assert learning_rate_warning(MethodConfig(kind="lora"), 2e-4) is None
    assert "low for prompt_tuning" in learning_rate_warning(
        MethodConfig(kind="prompt_tuning"), 1e-5
    )
