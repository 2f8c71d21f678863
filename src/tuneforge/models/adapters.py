"""Make a loaded model trainable by one fine-tuning method (PEFT adapters, or full).

`attach_method(model, method)` maps a `MethodConfig` onto peft's configs:
  full           every parameter trainable, no adapter;
  lora / dora    LoraConfig (dora: use_dora=True), rsLoRA via method.rslora;
  qlora          LoRA on a 4-bit base: load it with `load_model(..., quantization="nf4")`;
  ia3            IA3Config, with peft's per-architecture targets for target_modules=all-linear;
  prompt_tuning  PromptTuningConfig (optionally initialised from method.prompt_init_text);
  prefix_tuning  PrefixTuningConfig.
Any method on a 4-bit base first goes through peft's `prepare_model_for_kbit_training`.

Target modules are checked against the model before peft sees them, so a typo lists the linear
layers the model does have instead of peft's bare "not found in the base model".
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tuneforge.config import MethodConfig
from tuneforge.errors import TuneforgeError
from tuneforge.models.quantize import is_quantized

if TYPE_CHECKING:
    from torch import nn

ALL_LINEAR = "all-linear"
# Layers that are the MLP output in common architectures; IA3 scales their *input* (peft's
# "feedforward_modules") instead of their output.
_FEEDFORWARD_NAMES = frozenset({"down_proj", "fc2", "w2", "dense_4h_to_h"})
_FULL_LR_LIMIT = 1e-4
_SOFT_PROMPT_LR_FLOOR = 1e-3
_SOFT_PROMPT_KINDS = ("prompt_tuning", "prefix_tuning")


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct short names (`q_proj`, ...) of the model's linear layers, in model order."""
    from torch import nn

    names: dict[str, None] = {}
    for name, module in model.named_modules():
        # bitsandbytes Linear4bit subclasses nn.Linear, so 4-bit models are covered too.
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names[name.rsplit(".", 1)[-1]] = None
    return list(names)


def _module_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_modules() if name}


def _matches(requested: str, full_names: set[str]) -> bool:
    # peft's rule for a list entry: the full module name equals it or ends with ".<entry>".
    return any(name == requested or name.endswith("." + requested) for name in full_names)


def resolve_target_modules(model: nn.Module, target_modules: list[str] | str) -> list[str] | str:
    """`all-linear`, or the explicit list (a comma-separated string works too), checked."""
    if isinstance(target_modules, str):
        if target_modules.strip().lower() == ALL_LINEAR:
            return ALL_LINEAR
        target_modules = [part.strip() for part in target_modules.split(",") if part.strip()]
    if not target_modules:
        raise TuneforgeError(
            "method.target_modules: empty; use all-linear or a list like [q_proj, v_proj]"
        )
    full_names = _module_names(model)
    missing = [name for name in target_modules if not _matches(name, full_names)]
    if missing:
        raise TuneforgeError(
            f"method.target_modules: the model has no module named "
            f"{', '.join(map(repr, missing))}; "
            f"its linear layers are: {', '.join(linear_module_names(model))} (or use all-linear)"
        )
    return list(target_modules)


def _check_modules_to_save(model: nn.Module, modules: list[str] | None) -> list[str] | None:
    if not modules:
        return None
    full_names = _module_names(model)
    missing = [name for name in modules if not _matches(name, full_names)]
    if missing:
        top = sorted({name.rsplit(".", 1)[-1] for name in full_names})
        raise TuneforgeError(
            f"method.modules_to_save: the model has no module named "
            f"{', '.join(map(repr, missing))}; "
            f"module names: {', '.join(top)}"
        )
    return list(modules)


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "")


def ia3_targets(model: nn.Module, target_modules: list[str] | str) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) for IA3.

    For all-linear, peft's per-architecture defaults (llama: k_proj, v_proj, down_proj; gemma3:
    q_proj, v_proj, down_proj): IA3 is meant to rescale a few activations, not every layer.
    """
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    model_type = _model_type(model)
    resolved = resolve_target_modules(model, target_modules)
    if resolved == ALL_LINEAR:
        if model_type not in TARGETS:
            raise TuneforgeError(
                f"method.kind=ia3: no default target modules for model type {model_type!r}; set "
                f"method.target_modules to a list from: {', '.join(linear_module_names(model))}"
            )
        targets = list(TARGETS[model_type])
        resolved = resolve_target_modules(model, targets)
    assert isinstance(resolved, list)
    known_ff = set(FEEDFORWARD.get(model_type, [])) | _FEEDFORWARD_NAMES
    return resolved, [name for name in resolved if name in known_ff]


def _peft_config(model: nn.Module, method: MethodConfig) -> Any:
    from peft import (
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
    )

    kind = method.kind
    modules_to_save = _check_modules_to_save(model, method.modules_to_save)
    if kind in ("lora", "qlora", "dora"):
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=method.r,
            lora_alpha=method.alpha,
            lora_dropout=method.dropout,
            target_modules=resolve_target_modules(model, method.target_modules),
            use_rslora=method.rslora,
            use_dora=kind == "dora",
            modules_to_save=modules_to_save,
            bias="none",
        )
    if kind == "ia3":
        targets, feedforward = ia3_targets(model, method.target_modules)
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=targets,
            feedforward_modules=feedforward,
            modules_to_save=modules_to_save,
        )
    if kind == "prompt_tuning":
        init: dict[str, Any] = {"prompt_tuning_init": PromptTuningInit.RANDOM}
        if method.prompt_init_text:
            init = {
                "prompt_tuning_init": PromptTuningInit.TEXT,
                "prompt_tuning_init_text": method.prompt_init_text,
                # peft re-reads the tokenizer by name; every load_model() location has one.
                "tokenizer_name_or_path": _tokenizer_location(model),
            }
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=method.num_virtual_tokens, **init
        )
    if kind == "prefix_tuning":
        return PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=method.num_virtual_tokens
        )
    raise TuneforgeError(f"method.kind {kind!r}: not an adapter method")


def _tokenizer_location(model: nn.Module) -> str:
    location = str(getattr(model, "name_or_path", "") or "")
    if not location:
        raise TuneforgeError(
            "method.prompt_init_text needs the model's tokenizer, but the model was not "
            "loaded from a directory or hub id; load it with tuneforge.models.load_model"
        )
    return location


def _enable_gradient_checkpointing(model: Any) -> None:
    # Non-reentrant checkpointing works with frozen inputs (adapters), so no
    # enable_input_require_grads() hack is needed.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # earlier 5.x; deprecated (FutureWarning) where the new name exists
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with it


@contextlib.contextmanager
def _quiet_peft_deprecations() -> Iterator[None]:
    """peft 0.21 still calls transformers' `*gradient_checkpointing*` names, which transformers
    5.2x deprecates with a FutureWarning on every call; that is peft's to fix, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning
        )
        yield


def attach_method(model: Any, method: MethodConfig, *, gradient_checkpointing: bool = False) -> Any:
    """Make `model` trainable by `method.kind`; returns the model (full) or a peft PeftModel."""
    quantized = is_quantized(model)
    if method.kind == "full":
        if quantized:
            raise TuneforgeError(
                "method.kind=full cannot train a 4-bit base; "
                "use method.kind=qlora or load without quantization"
            )
        for param in model.parameters():
            param.requires_grad_(True)
        if gradient_checkpointing:
            _enable_gradient_checkpointing(model)
        return model
    if method.kind == "qlora" and not quantized:
        raise TuneforgeError(
            "method.kind=qlora needs a 4-bit base: load it with quantization=nf4 (or fp4), "
            "e.g. load_model(cfg, quantization=method.quantization)"
        )
    if quantized:
        from peft import prepare_model_for_kbit_training

        with _quiet_peft_deprecations():
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
    elif gradient_checkpointing:
        _enable_gradient_checkpointing(model)

    from peft import get_peft_model

    from tuneforge.models.dropout import fold_lora_dropout

    config = _peft_config(model, method)
    try:
        with _quiet_peft_deprecations():
            peft_model = get_peft_model(model, config)
    except (ValueError, TypeError) as exc:
        # peft's own checks (e.g. a layer type a method does not support): say which method.
        raise TuneforgeError(
            f"method.kind={method.kind}: peft cannot apply it to this model: {exc}"
        ) from None
    # Same adapters and dropout distribution, a fraction of the saved activations (dropout.py).
    fold_lora_dropout(peft_model)
    return peft_model


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as the parameters they pack."""
    if hasattr(model, "get_nb_trainable_parameters"):  # a PeftModel; handles Params4bit
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    if hasattr(model, "num_parameters"):  # a PreTrainedModel; also handles Params4bit
        return int(model.num_parameters(only_trainable=True)), int(model.num_parameters())
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def learning_rate_warning(method: MethodConfig, lr: float) -> str | None:
    """A warning for a learning rate that is likely wrong for the method, or None."""
    if method.kind == "full" and lr > _FULL_LR_LIMIT:
        return (
            f"train.lr={lr:g} is high for full fine-tuning (every weight moves); it tends to wreck "
            "the pretrained model. Typical: 1e-5 to 5e-5. Adapter methods (lora) use ~2e-4."
        )
    if method.kind in _SOFT_PROMPT_KINDS and lr < _SOFT_PROMPT_LR_FLOOR:
        return (
            f"train.lr={lr:g} is low for {method.kind}: soft prompts usually need 1e-3 to 3e-2 "
            "to learn anything in a few epochs."
        )
    return None
