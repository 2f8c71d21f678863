"""The memory arithmetic against hand calculations, and the parameter counts against training."""

from __future__ import annotations

import pytest

from tuneforge.estimate import memory as mem
from tuneforge.estimate.shape import Params, Shape

# h=8, i=16, 2 layers, 2 heads of 4 (q=8), 1 kv head (kv=4): grouped-query attention.
SHAPE = Shape(hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, head_dim=4, vocab=32)
PARAMS = Params(total=1000, quantizable=600, trainable=50, adapter_in_features=40, adapter_rank=12)


def test_layer_activation_elements():
    # norms 2 x 3h = 48; q,k,v 8+4+4 = 16; rotary 8+4 = 12; output + relayout 16; GQA repeat
    # of k and v 16; MLP 4i = 64  ->  172 elements per token per layer.
    assert mem.layer_elements_per_token(SHAPE) == 172
    mha = Shape(hidden=8, intermediate=16, layers=2, heads=2, kv_heads=2, head_dim=4, vocab=32)
    assert mem.layer_elements_per_token(mha) == 48 + (8 + 16) + (8 + 8) + 16 + 64


def test_lora_fp32_cpu_breakdown():
    b = mem.breakdown(
        SHAPE, PARAMS, mem.FP32_CPU, "lora", 10,
        dropout=0.05, double_quant=True, checkpointing=False, runtime=7.0,
    )  # fmt: skip
    assert b.weights == 1000 * 4 + 50 * 4
    assert b.gradients == 50 * 4
    assert b.optimizer == 50 * 8  # AdamW: two fp32 states
    # per token: 2 layers x 172 x 4 B = 1376; adapters: A x (12 x 4 B) + dropout copies and
    # masks (40 x (4 + 1) B) = 248  ->  1624 B x 10 tokens
    assert b.activations == 16240
    assert b.total == 4200 + 200 + 400 + 16240 + 7


def test_no_dropout_keeps_no_dropout_copies():
    act = mem.activation_bytes(SHAPE, PARAMS, mem.FP32_CPU, 10, dropout=0.0, checkpointing=False)
    assert act == (1376 + 48) * 10


def test_gradient_checkpointing_keeps_layer_inputs_and_one_layer():
    act = mem.activation_bytes(SHAPE, PARAMS, mem.FP32_CPU, 10, dropout=0.05, checkpointing=True)
    # layer inputs 2 x 8 x 4 B = 64; one layer recomputed 172 x 4 = 688; its adapters 248 / 2
    assert act == (64 + 688 + 124) * 10


def test_qlora_weights_are_four_bit_plus_block_constants():
    dq = mem.weight_bytes(PARAMS, mem.FP32_CPU, "qlora", double_quant=True)
    # 600 NF4 weights x (0.5 + 1/64 + 4/16384) + 400 other fp32 weights + 50 fp32 adapters
    assert dq == pytest.approx(600 * 0.515869140625 + 1600 + 200)
    plain = mem.weight_bytes(PARAMS, mem.FP32_CPU, "qlora", double_quant=False)
    assert plain == pytest.approx(600 * 0.5625 + 1600 + 200)
    bf16 = mem.weight_bytes(PARAMS, mem.BF16_CUDA, "qlora", double_quant=True)
    assert bf16 == pytest.approx(600 * 0.515869140625 + 400 * 2 + 50 * 4)


def test_full_bf16_cuda_trains_every_weight_in_bf16_with_8bit_adam():
    full = Params(total=1000, quantizable=600, trainable=1000)
    b = mem.breakdown(
        SHAPE, full, mem.BF16_CUDA, "full", 10,
        dropout=0.05, double_quant=True, checkpointing=False, runtime=0.0,
    )  # fmt: skip
    assert (b.weights, b.gradients, b.optimizer) == (2000, 2000, 2000)
    assert b.activations == 2 * 172 * 2 * 10  # no adapters


@pytest.mark.parametrize(
    ("batch", "longest", "budget", "expected"),
    [
        (8, 100, 2048, 800),  # fits the budget
        (32, 100, 2048, 2000),  # split into passes of 20 rows
        (4, 3000, 2048, 3000),  # one row longer than the budget runs alone
        (32, 100, None, 3200),  # no budget: the whole batch
    ],
)
def test_tokens_per_pass(batch, longest, budget, expected):
    assert mem.tokens_per_pass(batch, longest, budget) == expected


def test_a_shared_prefix_counts_once_per_pass():
    # 8 rows of 100 tokens whose first 30 are the same system prompt: 30 + 8 x 70
    assert mem.tokens_per_pass(8, 100, 2048, prefix=30) == 590


def test_a_packed_row_counts_real_tokens_against_the_budget():
    # 32 rows of 100 tokens, 30 of them a shared prefix: 30 + 29 x 70 = 2060 > 2048, so 28 rows
    assert mem.tokens_per_pass(32, 100, 2048, prefix=30, packed=True) == 30 + 28 * 70
    assert mem.tokens_per_pass(32, 100, 2048, prefix=30) == 30 + 20 * 70  # padded: 20 x 100
    assert mem.tokens_per_pass(4, 3000, 2048, packed=True) == 3000  # alone, as padded


def test_pad_to_multiple_of_rounds_the_worst_case_pass():
    # data.pad_to_multiple_of=64: rows of 100 are computed 128 wide, the packed row 30 + 8 x 70
    # = 590 is computed 640 wide, as the loop's collate pads them
    assert mem.tokens_per_pass(8, 100, None, multiple=64) == 8 * 128
    assert mem.tokens_per_pass(8, 100, None, prefix=30, multiple=64) == 30 + 8 * 98
    assert mem.tokens_per_pass(8, 100, None, prefix=30, packed=True, multiple=64) == 640


def test_counts_match_the_trained_model(tiny_model_dir):
    """The meta-device counts equal what `attach_method` gives on the loaded model, and LoRA's
    trainable count equals r x (in + out) summed over the adapted layers, by hand."""
    from transformers import AutoConfig

    from tuneforge.config import MethodConfig, ModelConfig
    from tuneforge.estimate.shape import count_params, shape_of
    from tuneforge.models.adapters import attach_method, count_parameters
    from tuneforge.models.load import load_model

    config = AutoConfig.from_pretrained(tiny_model_dir)
    s = shape_of(config)
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    per_layer = [(s.hidden, q), (s.hidden, kv), (s.hidden, kv), (q, s.hidden),
                 (s.hidden, s.intermediate), (s.hidden, s.intermediate), (s.intermediate, s.hidden)]  # fmt: skip
    for kind, r in (("lora", 4), ("full", 4), ("ia3", 4)):
        method = MethodConfig(kind=kind, r=r)
        counted = count_params(config, method)
        model, _, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
        trainable, _ = count_parameters(attach_method(model, method))
        assert counted.trainable == trainable, kind
    lora = count_params(config, MethodConfig(kind="lora", r=4))
    assert lora.trainable == s.layers * sum(4 * (i + o) for i, o in per_layer)
    assert lora.adapter_in_features == s.layers * sum(i for i, _ in per_layer)
    assert lora.adapter_rank == s.layers * 7 * 4
    assert count_params(config, MethodConfig(kind="qlora", r=4)).trainable == lora.trainable
