"""Models: locate, load (GGUF via a cache), tokenizer + chat template, and fine-tuning methods.

Modules, one job each:
  sources      ModelConfig.name -> packaged GGUF / HF directory / .gguf file / hub id
  cache        the on-disk cache of converted GGUFs (atomic entries, memoized file hashes)
  gguf_import  GGUF -> plain trainable HF model directory
  load         load_model / load_tokenizer: the entry points train/eval/serve use
  tokenizer    pad token, chat template (with a documented fallback), save/load with a run
  quantize     bitsandbytes 4-bit config (NF4/FP4) for QLoRA, CPU or CUDA
  adapters     attach_method (full, LoRA, QLoRA, DoRA, IA3, prompt/prefix tuning), counting
  tiny         tiny random models for tests (their GGUF form: export.tiny_gguf)

The names below are re-exported lazily, so `import tuneforge.models` stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelInfo": "load",
    "load_model": "load",
    "load_tokenizer": "load",
    "resolve_dtype": "load",
    "ModelSource": "sources",
    "resolve_source": "sources",
    "packaged_names": "sources",
    "attach_method": "adapters",
    "count_parameters": "adapters",
    "learning_rate_warning": "adapters",
    "save_tokenizer": "tokenizer",
    "load_saved_tokenizer": "tokenizer",
    "stop_token_ids": "tokenizer",
    "template_prefix_problem": "tokenizer",
    "build_tiny_causal_lm": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuneforge.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tuneforge.models.{module}"), name)
