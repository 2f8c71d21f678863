"""Fold an adapter into its base (`merge_and_unload`), save plain or 4-bit HF directories,
and load every exported format back the way a user would.

QLoRA: the adapter was trained against the NF4-quantized base, so it is merged onto that base
*dequantized* (`PreTrainedModel.dequantize()`), not onto the original float weights: that is the
function the adapter learned to correct. (peft's own merge into 4-bit layers would re-quantize
the sum, losing the adapter's small updates.) The merged model is plain float; the export's
validation then measures how closely it agrees with the 4-bit base + adapter.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.errors import TuneforgeError
from tuneforge.models.trained import RunDir, is_adapter_model

if TYPE_CHECKING:
    import torch

MERGEABLE = ("lora", "qlora", "dora", "ia3", "full")
DTYPES = ("float32", "bfloat16", "float16")


def check_mergeable(run: RunDir, to: str) -> None:
    kind = run.config.method.kind
    if kind not in MERGEABLE:
        raise TuneforgeError(
            f"--to {to}: a {kind} adapter cannot be merged into the base weights (it adds "
            "virtual tokens, not weight updates); export --to adapter instead"
        )


def check_dtype(dtype: str) -> torch.dtype:
    import torch

    if dtype not in DTYPES:
        raise TuneforgeError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def merged_model(model: Any, run: RunDir, device: str = "cpu") -> Any:
    """The run as one plain float model. Consumes `model` (the loaded run) for LoRA-style runs."""
    if not is_adapter_model(model):
        return model  # a full fine-tune is already one model
    from tuneforge.models.adapters import _quiet_peft_deprecations
    from tuneforge.models.quantize import is_quantized

    if is_quantized(model.get_base_model()):
        from peft import PeftModel

        from tuneforge.models.trained import load_base

        base, _ = load_base(run.path, device=device)
        # transformers keeps the compute dtype and drops quantization_config from the config.
        base = base.dequantize()
        with _quiet_peft_deprecations():
            model = PeftModel.from_pretrained(base, str(run.path), is_trainable=False)
    with _quiet_peft_deprecations():
        merged = model.merge_and_unload()
    merged.eval()
    return merged


def save_merged(model: Any, tokenizer: Any, out: Path, dtype: str = "float32") -> None:
    """An HF directory: safetensors in `dtype`, config, generation config, tokenizer+template."""
    from tuneforge.models.tokenizer import save_tokenizer

    model = model.to(check_dtype(dtype))
    model.config.use_cache = True  # training may have switched it off (gradient checkpointing)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)


def save_int4(model: Any, tokenizer: Any, out: Path, quant: str, device: str = "cpu") -> None:
    """The merged model quantized to 4 bits (bitsandbytes nf4/fp4), saved reloadable."""
    from transformers import AutoModelForCausalLM

    from tuneforge.models.quantize import quantized_load_kwargs, require_bitsandbytes
    from tuneforge.models.tokenizer import save_tokenizer

    require_bitsandbytes()
    # bitsandbytes quantizes while loading, so the float merge goes through a scratch directory.
    scratch = Path(tempfile.mkdtemp(prefix=".merged-", dir=out.parent))
    try:
        save_merged(model, tokenizer, scratch, "float32")
        quantized = AutoModelForCausalLM.from_pretrained(
            scratch, dtype="auto", **quantized_load_kwargs(quant, device=device)
        )
        quantized.generation_config = model.generation_config
        quantized.save_pretrained(out, safe_serialization=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    save_tokenizer(tokenizer, out)


def _load(loader: Any, location: Path, what: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(str(location), **kwargs)
    except Exception as exc:  # any failure to reload is exactly what validation must report
        raise TuneforgeError(f"{location}: the exported {what} does not load back: {exc}") from None


def load_hf(out: Path, device: str = "cpu") -> Any:
    """A merged or int4 export, as `from_pretrained(dir)` gives it (4-bit from its config)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": "auto"}
    if device != "cpu":
        kwargs["device_map"] = {"": device}
    model = _load(AutoModelForCausalLM, out, "model", **kwargs)
    return model.eval()


@contextlib.contextmanager
def _no_gguf_progress_bar() -> Iterator[None]:
    """transformers draws a tqdm bar while dequantizing a GGUF, outside its own logging
    switches (and tqdm reads TQDM_DISABLE only at import); silence that one bar."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:  # a transformers version without it: nothing to silence
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def load_gguf(path: Path, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file through transformers' GGUF loader (dequantized)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _no_gguf_progress_bar():
        model = _load(
            AutoModelForCausalLM, path.parent, "GGUF", gguf_file=path.name, dtype=torch.float32
        )
    tokenizer = _load(AutoTokenizer, path.parent, "GGUF tokenizer", gguf_file=path.name)
    return model.to(device).eval(), tokenizer


def load_adapter_export(out: Path, device: str = "cpu") -> Any:
    """An adapter export on its base, loaded as `tuneforge` (and `PeftModel`) would."""
    from tuneforge.models.trained import load_trained

    model, _, _ = load_trained(out, device=device)
    return model
