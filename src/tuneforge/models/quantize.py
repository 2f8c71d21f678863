"""4-bit (bitsandbytes NF4/FP4) quantization config for QLoRA, on CPU as well as CUDA.

What we found with bitsandbytes 0.50 + transformers 5 on a CPU-only torch:
  * `from_pretrained(local_dir, quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))`
    quantizes on CPU both with `device_map=None` and `device_map="cpu"`: the linear layers become
    `bnb.nn.Linear4bit` with packed `Params4bit` (uint8) weights, and forward/backward work. No
    `.to()` call is needed; `.to(device)` works, but `.to(dtype)` is refused ("You cannot cast a
    bitsandbytes model"), so the dtype must be chosen at load time. We pass
    `device_map={"": device}` so the weights are quantized where they will be used, in one step.
  * The compute dtype must be float32 on CPU: CPU matmuls in bfloat16 are slow and lose precision
    for the LoRA gradients; on CUDA bfloat16 is the standard QLoRA choice.
  * Importing bitsandbytes on CPU logs "Failed to load CPU gemm_4bit_forward from kernels-community"
    when the optional `kernels` package is absent; it then uses its built-in CPU path. Harmless.
  * `lm_head` (and the tied embedding) stay unquantized, as transformers skips output layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from tuneforge.errors import TuneforgeError

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig

Quantization = Literal["none", "nf4", "fp4"]


def compute_dtype(device: str) -> torch.dtype:
    """The dtype 4-bit layers compute in: bfloat16 on CUDA, float32 elsewhere (CPU)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def require_bitsandbytes() -> None:
    """Fail with an install hint, not an ImportError deep inside transformers."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TuneforgeError(
            "4-bit quantization (method.quantization=nf4/fp4, method.kind=qlora) needs "
            "bitsandbytes: "
            "pip install 'tuneforge[quant]' (or pip install bitsandbytes)"
        ) from None


def bnb_config(
    quantization: Quantization | str, *, double_quant: bool = True, device: str = "cpu"
) -> BitsAndBytesConfig | None:
    """The `quantization_config` for `from_pretrained`, or None for `quantization="none"`."""
    if quantization == "none":
        return None
    if quantization not in ("nf4", "fp4"):
        raise TuneforgeError(f"quantization {quantization!r}: expected one of none, nf4, fp4")
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype(device),
        # Non-quantized modules (norms, lm_head) keep the model's dtype: float32 on CPU.
    )


def quantized_load_kwargs(
    quantization: Quantization | str, *, double_quant: bool = True, device: str = "cpu"
) -> dict[str, Any]:
    """Extra `from_pretrained` kwargs that load the base in 4 bits on `device` (empty for none)."""
    config = bnb_config(quantization, double_quant=double_quant, device=device)
    if config is None:
        return {}
    return {"quantization_config": config, "device_map": {"": device}}


def is_quantized(model: Any) -> bool:
    """True for a model loaded in 4 or 8 bits (a base that only adapters can train)."""
    return bool(
        getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    )
