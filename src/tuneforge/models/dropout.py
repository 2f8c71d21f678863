"""LoRA's input dropout folded into `lora_A`, keeping a 1-byte mask instead of dropped copies.

peft computes `lora_B(lora_A(dropout(x)))`. For backward, autograd then keeps, per adapted
layer, the dropped copy of x (lora_A's input, for lora_A's weight gradient) and the dropout
mask — which `torch.nn.functional.dropout` on CPU stores as a float32 tensor the size of x.
q, k and v read the same x, so one attention block kept three dropped copies and three float
masks of one tensor. Measured on a packed SmolLM2 batch (LoRA on q/k/v/o, 563 tokens), that
was 35 % of the saved activations.

`DroppedInputLinear` replaces lora_A (same weight, same state-dict key) and peft's dropout
becomes `nn.Identity`: the product `dropout(x) @ A^T` is one autograd node that saves x itself
(one tensor, shared by q, k and v) and a bool keep-mask, and rebuilds the dropped input in
backward (one element-wise product). Same distribution as `nn.Dropout` (each element kept with
probability 1 - p and scaled by 1 / (1 - p)); the masks come from the same global generator,
so runs stay seeded and resumable.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _DroppedInputProduct(torch.autograd.Function):
    """y = (x * keep / (1 - p)) @ weight^T with keep ~ Bernoulli(1 - p), saving x and keep."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(x.shape, device=x.device) >= p  # [..., in] bool
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(x, keep, weight)
        ctx.scale = scale
        return F.linear(x * keep * scale, weight)  # [..., r]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, keep, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        # Computed in the gradient's dtype (bfloat16 under autocast), returned in the inputs'.
        if ctx.needs_input_grad[0]:
            grad_x = ((grad @ weight.to(grad.dtype)) * keep * ctx.scale).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dropped = (x * keep * ctx.scale).to(grad.dtype).reshape(-1, x.shape[-1])  # [N, in]
            grad_weight = (grad.reshape(-1, grad.shape[-1]).T @ dropped).to(weight.dtype)
        return grad_x, grad_weight, None


class DroppedInputLinear(nn.Linear):
    """A bias-free `nn.Linear` (peft's lora_A) that applies dropout to its own input."""

    def __init__(self, linear: nn.Linear, p: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: state dict and optimizer unchanged
        self.bias = None
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return F.linear(x, self.weight)
        if not torch.is_grad_enabled():
            return F.linear(F.dropout(x, self.p, training=True), self.weight)
        return _DroppedInputProduct.apply(x, self.weight, self.p)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p}"


def fold_lora_dropout(model: nn.Module) -> int:
    """Move every plain LoRA layer's input dropout into its lora_A; returns how many were folded.

    Only layers whose adapter is vanilla LoRA with `nn.Dropout` are touched: DoRA and other
    peft variants call the dropout themselves and keep it.
    """
    folded = 0
    for module in model.modules():
        lora_a, dropouts = getattr(module, "lora_A", None), getattr(module, "lora_dropout", None)
        if not isinstance(lora_a, nn.ModuleDict) or not isinstance(dropouts, nn.ModuleDict):
            continue
        variants = getattr(module, "lora_variant", {})
        dropout_by_name = dict(dropouts.items())
        for name, linear in lora_a.items():
            dropout = dropout_by_name.get(name)
            plain = type(linear) is nn.Linear and linear.bias is None
            if name in variants or not plain or not isinstance(dropout, nn.Dropout):
                continue
            if dropout.p == 0:
                continue
            lora_a[name] = DroppedInputLinear(linear, dropout.p)
            dropouts[name] = nn.Identity()
            folded += 1
    return folded
