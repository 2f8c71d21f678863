"""Load a model and its tokenizer from a `ModelConfig`: the one entry point train/eval/serve use.

Every source ends up as an ordinary `from_pretrained(location)`: an HF directory or hub id is used
directly, and a GGUF (packaged or a path) is first converted once into a cache entry (see
`gguf_import`), so only the first load of a given file pays for dequantization.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.config import ModelConfig
from tuneforge.errors import TuneforgeError
from tuneforge.models.quantize import Quantization, quantized_load_kwargs
from tuneforge.models.sources import (
    ModelSource,
    SourceKind,
    hub_is_reachable,
    hub_unreachable_error,
    resolve_source,
    unreadable_file_errors,
)
from tuneforge.models.tokenizer import TemplateSource, prepare_tokenizer, stop_token_ids

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, from where, and how: recorded with every run for reproducibility."""

    source_kind: SourceKind
    name: str
    """`ModelConfig.name` as given."""
    path: str
    """The resolved source: the .gguf file, the directory, or the hub id."""
    weights_dir: str
    """What `from_pretrained` read: the cache entry for a GGUF, else the same as `path`."""
    sha256: str | None
    """Of the GGUF file (None for directories and hub ids)."""
    chat_template: str
    template_source: TemplateSource
    dtype: str
    device: str
    quantization: str
    from_cache: bool | None
    """GGUF only: True if the converted cache entry already existed."""
    load_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_dtype(dtype: str, device: str = "cpu") -> torch.dtype:
    """ModelConfig.dtype -> torch dtype; "auto" is float32 on CPU and bfloat16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    except KeyError:
        raise TuneforgeError(
            f"model.dtype {dtype!r}: expected auto, float32, bfloat16 or float16"
        ) from None


def check_device(device: str) -> None:
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise TuneforgeError(
            f"device {device!r}: not a device; use cpu, cuda or cuda:N (e.g. --device cpu)"
        ) from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise TuneforgeError(f"device {device!r}: CUDA is not available here; use device=cpu")
    if str(device) == "mps" and not torch.backends.mps.is_available():
        raise TuneforgeError("device 'mps': not available here; use device=cpu")


@dataclass(frozen=True)
class _Location:
    target: str
    """What `from_pretrained` gets: a directory or a hub id."""
    sha256: str | None = None
    from_cache: bool | None = None
    local_only: bool = False
    """Hub only: the hub is unreachable, so read the local HF cache or fail fast."""


def _locate(source: ModelSource) -> _Location:
    """Where `from_pretrained` should read; converts (once) a GGUF into its cache entry."""
    if source.kind == "hub":
        assert source.hub_id is not None
        return _Location(source.hub_id, local_only=not hub_is_reachable())
    assert source.path is not None
    if not source.is_gguf:
        return _Location(str(source.path))
    from tuneforge.models.gguf_import import materialize_gguf

    entry, sha, cached = materialize_gguf(source.path)
    return _Location(str(entry), sha, cached)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _check_tokenizer_files(source: ModelSource) -> None:
    """A directory saved without its tokenizer fails deep in transformers; say so plainly."""
    if source.kind != "directory" or source.path is None:
        return
    if not any((source.path / name).is_file() for name in _TOKENIZER_FILES):
        raise TuneforgeError(
            f"{source.path}: has model weights but no tokenizer files (tokenizer.json, "
            "tokenizer_config.json); save the tokenizer into the same directory "
            "(tokenizer.save_pretrained(dir))"
        )


def _from_pretrained(loader: Any, source: ModelSource, where: _Location, **kwargs: Any) -> Any:
    """`loader.from_pretrained`, with the failures a user can fix turned into TuneforgeErrors."""
    if source.kind == "hub":
        kwargs["local_files_only"] = where.local_only
    try:
        return loader.from_pretrained(where.target, **kwargs)
    except OSError as exc:
        if source.kind == "hub" and where.local_only:
            raise hub_unreachable_error(where.target) from None
        raise TuneforgeError(
            f"model {source.name!r}: cannot load from {where.target}: {exc}"
        ) from None
    except ValueError as exc:  # e.g. an unknown model_type in config.json
        raise TuneforgeError(f"model {source.name!r}: {where.target}: {exc}") from None
    except unreadable_file_errors() as exc:  # a config.json that is not an object, torn weights
        raise TuneforgeError(
            f"model {source.name!r}: cannot load from {where.target} ({type(exc).__name__}: "
            f"{exc}); are its config.json and weights complete and uncorrupted?"
        ) from None


def load_tokenizer(name_or_cfg: str | ModelConfig) -> PreTrainedTokenizerBase:
    """The prepared tokenizer (pad token + chat template) for a model, without loading weights.

    Fast: for a GGUF it reads a cache entry (~0.1 s once transformers is imported); only the
    very first call per file parses the GGUF metadata (~2.5 s for SmolLM2). Weights never load.
    """
    from transformers import AutoTokenizer

    cfg = name_or_cfg if isinstance(name_or_cfg, ModelConfig) else ModelConfig(name=name_or_cfg)
    source = resolve_source(cfg.name)
    _check_tokenizer_files(source)
    if source.is_gguf:
        from tuneforge.models.gguf_import import tokenizer_for_gguf

        assert source.path is not None
        tokenizer = tokenizer_for_gguf(source.path)
    else:
        tokenizer = _from_pretrained(AutoTokenizer, source, _locate(source))
    prepare_tokenizer(tokenizer, cfg.chat_template)
    return tokenizer


def load_model(
    cfg: ModelConfig,
    *,
    device: str = "cpu",
    quantization: Quantization | str = "none",
    double_quant: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]:
    """Load (model, prepared tokenizer, info). `quantization` nf4/fp4 loads the base in 4 bits.

    The model is in eval mode on `device`, with `generation_config` set to stop on the chat
    template's turn end as well as eos, and to pad with the tokenizer's pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    check_device(device)
    source = resolve_source(cfg.name)
    _check_tokenizer_files(source)
    where = _locate(source)
    tokenizer = _from_pretrained(AutoTokenizer, source, where)
    template_source = prepare_tokenizer(tokenizer, cfg.chat_template)
    dtype = resolve_dtype(cfg.dtype, device)
    quant_kwargs = quantized_load_kwargs(quantization, double_quant=double_quant, device=device)
    model = _from_pretrained(AutoModelForCausalLM, source, where, dtype=dtype, **quant_kwargs)
    if not quant_kwargs:
        model.to(device)  # 4-bit models were placed by device_map (and refuse dtype casts)
    _align_generation_config(model, tokenizer)
    model.eval()
    info = ModelInfo(
        source_kind=source.kind,
        name=cfg.name,
        path=str(source.path) if source.path is not None else str(source.hub_id),
        weights_dir=where.target,
        sha256=where.sha256,
        chat_template=str(tokenizer.chat_template),
        template_source=template_source,
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        quantization=str(quantization),
        from_cache=where.from_cache,
        load_seconds=round(time.perf_counter() - started, 3),
    )
    return model, tokenizer, info


def _align_generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Pad with the tokenizer's pad id and stop at the end of an assistant turn, not only at eos."""
    model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is None:
        return
    generation.pad_token_id = tokenizer.pad_token_id
    stops = stop_token_ids(tokenizer)
    if stops:
        generation.eos_token_id = stops if len(stops) > 1 else stops[0]
