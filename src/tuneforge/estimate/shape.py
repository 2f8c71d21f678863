"""A model's dimensions and parameter counts per method, without loading its weights.

The architecture is built from its config on torch's `meta` device (tensors with a shape and
no storage), and the method is attached by the same `attach_method` training uses, so the
trainable count is exactly what `tuneforge train` will report, for any method peft supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.config import MethodConfig, ModelConfig
from tuneforge.errors import TuneforgeError


@dataclass(frozen=True)
class Shape:
    """The decoder's dimensions (from its config)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


@dataclass(frozen=True)
class Params:
    """Parameter counts of the base model and of one method on it."""

    total: int
    """Base model parameters (tied embeddings counted once)."""
    quantizable: int
    """In the linear layers a 4-bit load quantizes (all but the output head)."""
    trainable: int
    adapter_in_features: int = 0
    """LoRA-style methods: the sum of in_features over adapted layers (their dropout copies)."""
    adapter_rank: int = 0
    """LoRA-style methods: the sum of ranks over adapted layers (the A x activations)."""


def hf_config(model: ModelConfig) -> Any:
    """The transformers config of `model.name` (a packaged GGUF is converted once, cached)."""
    from transformers import AutoConfig

    from tuneforge.models.sources import resolve_source

    source = resolve_source(model.name)
    if source.is_gguf:
        from tuneforge.models.gguf_import import materialize_gguf

        assert source.path is not None
        target = str(materialize_gguf(source.path)[0])
    elif source.kind == "hub":
        target = str(source.hub_id)
    else:
        target = str(source.path)
    try:
        return AutoConfig.from_pretrained(target)
    except (OSError, ValueError) as exc:
        raise TuneforgeError(f"model {model.name!r}: cannot read its config: {exc}") from None


def shape_of(config: Any) -> Shape:
    text = getattr(config, "text_config", None) or config
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return Shape(
        hidden=hidden,
        intermediate=int(text.intermediate_size),
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        vocab=int(text.vocab_size),
    )


def count_params(config: Any, method: MethodConfig) -> Params:
    """Counts for `method` on the architecture `config` (meta device: no memory, ~1 s)."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    from tuneforge.models.adapters import attach_method

    # QLoRA trains the same adapters as LoRA; only the (frozen) base is stored differently.
    counted = method.model_copy(
        update={
            "kind": "lora" if method.kind == "qlora" else method.kind,
            "quantization": "none",
            "prompt_init_text": None,  # the init text changes values, not counts
        }
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        output = model.get_output_embeddings()
        total = sum(p.numel() for p in model.parameters())
        quantizable = sum(
            module.weight.numel()
            for module in model.modules()
            if isinstance(module, nn.Linear) and module is not output
        )
        model = attach_method(model, counted)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    in_features = rank = 0
    if method.kind in ("lora", "qlora", "dora"):
        for module in model.modules():
            ranks = getattr(module, "r", None)
            if isinstance(ranks, dict) and ranks and hasattr(module, "in_features"):
                in_features += int(module.in_features)
                rank += sum(int(r) for r in ranks.values())
    return Params(total, quantizable, trainable, in_features, rank)
