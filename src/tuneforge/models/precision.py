"""Compute precision for inference: plain float32, or bfloat16 matrix products.

`bf16` runs the model under `torch.autocast(dtype=bfloat16)` with bfloat16 copies of its
linear weights (the float32 weights are kept and put back): the matrix products (linear layers,
attention) compute in bfloat16, the norms and embeddings stay float32, and eval takes its
log-probabilities from the logits cast to float32 (as for a bfloat16 model). On a CPU with
native bfloat16 dot products (AVX512-BF16 or AMX) this classifies ~1.8x faster than float32
on SmolLM2-135M (docs/benchmarks.md), at the cost of rounding: a near-tied answer can flip, so
evaluations record the precision they ran at. `auto` runs the model in the dtype it is loaded in (float32 on CPU, bfloat16 on CUDA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

from tuneforge.errors import TuneforgeError

Precision = Literal["auto", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16")


def cpu_has_native_bf16() -> bool:
    """True when oneDNN can run bfloat16 products natively on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise TuneforgeError(
            f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)} "
            "(auto: the dtype the model is loaded in -- float32 on CPU, bfloat16 on CUDA; "
            "bf16: bfloat16 matrix products on CPU too)"
        )
    return precision  # type: ignore[return-value]


def precision_label(model: Any, precision: str) -> str:
    """What a forward pass of `model` under `inference_precision(..., precision)` computes in:
    "bf16 matmuls" for an autocast float32 model, else the dtype it was loaded in."""
    if _casts_to_bf16(model, precision):
        return "bfloat16 matmuls (float32 model)"
    return str(_parameter_dtype(model) or torch.float32).removeprefix("torch.")


@contextlib.contextmanager
def inference_precision(model: Any, precision: str) -> Iterator[Any]:
    """Run `model`'s forward passes at `precision` inside this context (see the module docstring).

    `auto` runs the model as loaded. `bf16` on a float32 model: every float32 linear weight is
    swapped for a bfloat16 copy and the forward runs under autocast; on exit the original
    float32 parameters are put back (untouched: whatever happens to the copies is dropped).
    The copies exist because autocast re-casts a frozen weight on every call (inference mode
    disables its cast cache): 20 % of eval's CPU time on SmolLM2 went to those casts.
    """
    check_precision(precision)
    if not _casts_to_bf16(model, precision):
        yield model
        return
    device_type = _device_type(model)
    if device_type not in ("cpu", "cuda"):
        raise TuneforgeError(
            f"--precision bf16 runs on cpu or cuda, not {device_type}; use --precision auto"
        )
    originals = []
    try:
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and _is_float32(weight):
                originals.append((module, weight))
                copy = torch.nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
                module.weight = copy  # a tied LM head gets its own copy; the embedding stays
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield model
    finally:
        for module, weight in originals:
            module.weight = weight


def freeze_linear_weights_in_bf16(model: Any) -> int:
    """Training at `train.precision=bf16`: every frozen float32 linear weight becomes bfloat16
    for good (its float32 copy is freed); returns how many were converted.

    Trainable parameters (adapters, saved modules), embeddings and norms stay float32, so under
    bfloat16 autocast the matrix products run in bfloat16 while the residual stream, the
    optimizer and the saved adapter stay float32 -- the CPU analogue of a bfloat16 base with
    float32 adapters on CUDA. Without it autocast re-casts every frozen weight on every call
    and keeps the casts for backward (more memory, little speed: docs/benchmarks.md).
    """
    # A head tied to the embedding stays tied (and float32): autocast casts it per call, and
    # the model keeps one copy of its largest matrix.
    embeddings = {
        id(param)
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding)
        for param in module.parameters(recurse=False)
    }
    converted = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (
            isinstance(module, torch.nn.Linear)
            and _is_float32(weight)
            and not weight.requires_grad
            and id(weight) not in embeddings
        ):
            module.weight = torch.nn.Parameter(
                weight.detach().to(torch.bfloat16), requires_grad=False
            )
            converted += 1
    if converted:
        # from_pretrained may leave float32 weights as views of the memory-mapped checkpoint; the
        # pages the conversion read stay resident while any tensor still maps the file. Moving
        # the float32 parameters that remain (embeddings, norms) into ordinary memory releases it.
        for param in model.parameters():
            if param.dtype == torch.float32 and not param.requires_grad:
                param.data = param.data.clone()
    return converted


def _casts_to_bf16(model: Any, precision: str) -> bool:
    """bf16 asked for a float32 model (a 16-bit model already runs as it is loaded)."""
    return precision == "bf16" and _parameter_dtype(model) in (None, torch.float32)


def _is_float32(weight: Any) -> bool:
    return isinstance(weight, torch.Tensor) and weight.dtype == torch.float32


def _device_type(model: Any) -> str:
    for param in model.parameters():
        return param.device.type
    return "cpu"


def _parameter_dtype(model: Any) -> torch.dtype | None:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None
