"""LoRA's input dropout folded into lora_A: same numbers as peft's dropout, less saved memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuneforge.config import MethodConfig, ModelConfig
from tuneforge.models.adapters import attach_method
from tuneforge.models.dropout import DroppedInputLinear, fold_lora_dropout
from tuneforge.models.load import load_model


def _keep_mask(seed: int, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """The mask DroppedInputLinear draws after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return torch.rand(shape) >= p


def test_folded_product_matches_dropout_then_linear_with_the_same_mask():
    p = 0.3
    torch.manual_seed(1)
    x = torch.randn(2, 5, 8, requires_grad=True)
    linear = nn.Linear(8, 3, bias=False)
    folded = DroppedInputLinear(linear, p)
    grad_out = torch.randn(2, 5, 3)

    torch.manual_seed(7)
    out = folded(x)
    out.backward(grad_out)
    got = (out.detach(), x.grad.clone(), linear.weight.grad.clone())

    keep = _keep_mask(7, tuple(x.shape), p)
    x.grad, linear.weight.grad = None, None
    expected_out = nn.functional.linear(x * keep / (1 - p), linear.weight)
    expected_out.backward(grad_out)
    torch.testing.assert_close(got[0], expected_out.detach())
    torch.testing.assert_close(got[1], x.grad)
    torch.testing.assert_close(got[2], linear.weight.grad)
    assert folded.weight is linear.weight  # the optimizer and state dict see the same parameter


def test_folded_dropout_keeps_about_one_minus_p_and_is_seeded():
    folded = DroppedInputLinear(nn.Linear(1, 1, bias=False), 0.25)
    nn.init.ones_(folded.weight)
    x = torch.ones(20_000, 1, requires_grad=True)
    torch.manual_seed(3)
    first = folded(x)
    torch.manual_seed(3)
    again = folded(x)
    kept = (first != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.02
    torch.testing.assert_close(first[first != 0], torch.full_like(first[first != 0], 1 / 0.75))
    assert torch.equal(first, again)
    with torch.no_grad():  # training mode without autograd still drops
        assert (folded(x) == 0).any()
    folded.eval()
    assert torch.equal(folded(x), x.detach())


def test_gradients_keep_the_input_dtypes_under_bf16_autocast():
    folded = DroppedInputLinear(nn.Linear(8, 4, bias=False), 0.1)
    x = torch.randn(6, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = folded(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and folded.weight.grad.dtype == torch.float32


def _lora(directory, **fields):
    model, _, _ = load_model(ModelConfig(name=str(directory)))
    return attach_method(model, MethodConfig(kind="lora", r=4, **fields))


def _unfolded(directory, **fields):
    """The same adapter as peft builds it: the fold undone (dropout module, plain lora_A)."""
    model = _lora(directory, **fields)
    for layer in model.modules():
        for name, lora_a in getattr(layer, "lora_A", {}).items():
            if isinstance(lora_a, DroppedInputLinear):
                plain = nn.Linear(lora_a.in_features, lora_a.out_features, bias=False)
                plain.weight = lora_a.weight
                layer.lora_A[name], layer.lora_dropout[name] = plain, nn.Dropout(lora_a.p)
    return model


def test_attach_folds_every_plain_lora_dropout_and_keeps_the_state_dict(tiny_llama_dir):
    model = _lora(tiny_llama_dir, dropout=0.1)
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    assert lora_layers
    for layer in lora_layers:
        assert isinstance(layer.lora_A["default"], DroppedInputLinear)
        assert isinstance(layer.lora_dropout["default"], nn.Identity)
    reference = _unfolded(tiny_llama_dir, dropout=0.1)
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert not any(isinstance(m, DroppedInputLinear) for m in reference.modules())

    # Same (non-zero) adapter weights, eval mode: the folded model computes what peft's does.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.2)
    reference.load_state_dict(model.state_dict())
    model.eval(), reference.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        torch.testing.assert_close(logits, reference(input_ids=ids).logits)
        with model.disable_adapter():
            assert not torch.allclose(logits, model(input_ids=ids).logits)


def test_nothing_is_folded_without_dropout_or_for_dora(tiny_llama_dir):
    for fields in ({"dropout": 0.0}, {"dropout": 0.1, "kind": "dora"}):
        model, _, _ = load_model(ModelConfig(name=str(tiny_llama_dir)))
        model = attach_method(model, MethodConfig(r=4, **{"kind": "lora", **fields}))
        assert not any(isinstance(m, DroppedInputLinear) for m in model.modules())
        assert fold_lora_dropout(model) == 0


def _saved_bytes(model, ids: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps for backward."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameters:
            storages[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids).logits.sum()
    return sum(storages.values())


@pytest.mark.parametrize("target", ["all-linear", ["q_proj", "k_proj", "v_proj", "o_proj"]])
def test_folding_saves_activation_memory(tiny_llama_dir, target):
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, 64))
    folded = _lora(tiny_llama_dir, dropout=0.1, target_modules=target)
    plain = _unfolded(tiny_llama_dir, dropout=0.1, target_modules=target)
    folded.train(), plain.train()
    # Each plain layer keeps a dropped float copy of its input and a float mask; folded layers
    # keep a bool mask and share the undropped input.
    assert _saved_bytes(folded, ids) < 0.85 * _saved_bytes(plain, ids)
