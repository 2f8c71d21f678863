"""Inference precision: bfloat16 matrix products (bf16 weight copies + autocast), or as loaded."""

from __future__ import annotations

import pytest
import torch

from tuneforge.errors import TuneforgeError
from tuneforge.models.precision import check_precision, inference_precision, precision_label


class TiedLM(torch.nn.Module):
    """An embedding tied to its output layer, a norm and a hidden linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.hidden = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.hidden(self.embed(ids))))


def test_bf16_computes_products_in_bfloat16_and_restores_the_float32_model():
    torch.manual_seed(0)
    model = TiedLM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.arange(16)[None]
    with inference_precision(model, "auto"):
        reference = model(ids)
    assert reference.dtype == torch.float32
    with torch.inference_mode(), inference_precision(model, "bf16"):
        assert model.hidden.weight.dtype == model.head.weight.dtype == torch.bfloat16
        assert model.embed.weight.dtype == model.norm.weight.dtype == torch.float32
        out = model(ids)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), reference, atol=0.05) and not torch.equal(
        out.float(), reference
    )
    # The float32 parameters are back, tie included, bit for bit.
    assert model.head.weight is model.embed.weight
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_restored_even_when_the_forward_fails():
    model = TiedLM()
    with pytest.raises(RuntimeError), inference_precision(model, "bf16"):
        raise RuntimeError("boom")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.head.weight is model.embed.weight


def test_a_16_bit_model_runs_as_loaded():
    model = TiedLM().to(torch.bfloat16)
    with inference_precision(model, "bf16"):
        assert not torch.is_autocast_enabled("cpu")
    assert precision_label(model, "bf16") == "bfloat16"
    assert precision_label(TiedLM(), "auto") == "float32"
    assert precision_label(TiedLM(), "bf16").startswith("bfloat16 matmuls")


@pytest.mark.parametrize("bad", ["fp16", "int8", ""])
def test_unknown_precision_is_refused_with_the_choices(bad):
    with pytest.raises(TuneforgeError, match="expected one of auto, bf16"):
        check_precision(bad)
    with pytest.raises(TuneforgeError, match="--precision"), inference_precision(TiedLM(), bad):
        pass


def test_bf16_on_an_unsupported_device_says_what_to_use():
    model = TiedLM().to("meta")
    with (
        pytest.raises(TuneforgeError, match="use --precision auto"),
        inference_precision(model, "bf16"),
    ):
        pass
