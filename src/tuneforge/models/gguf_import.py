"""Turn a GGUF file into a plain, trainable HF model directory (once; then it is cached).

`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` dequantizes the weights, but the model
it returns still carries a GGUF `quantization_config`/`hf_quantizer`, so `save_pretrained` and
the HF Trainer refuse it ("quantized with gguf ... not serializable"). We rebuild it: a fresh
model from the same config minus `quantization_config`, `load_state_dict` of the dequantized
weights, re-tie the embeddings, and save that (safetensors) with the tokenizer GGUF describes.

Cost for SmolLM2-135M on 2 CPU cores: ~15 s to dequantize + rebuild + save, once per file.
Afterwards the cache entry loads with a plain `from_pretrained(entry)` in ~1 s.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.models.cache import entry_dir, file_sha256, publish_directory, tokenizer_entry_dir
from tuneforge.models.sources import unreadable_file_errors

log = logging.getLogger(__name__)

SOURCE_RECORD = "tuneforge_source.json"
"""Written into each cache entry: which GGUF it came from, for humans and `tuneforge` debugging."""


# transformers <= 5.17 builds a wrong tokenizer from a GGUF's SentencePiece vocabulary (Gemma 3
# 270M: "track" -> "tr", "ack"), silently: the model then reads text in pieces it never saw
# (found on a GPU image with 5.17, where a fine-tune's tokens and losses changed).
MIN_TRANSFORMERS_FOR_GGUF = (5, 18)


def check_gguf_converter(version: str) -> None:
    """Refuse a transformers whose GGUF tokenizer conversion is known to be wrong."""
    from packaging.version import Version

    release = Version(version).release
    if release[:2] < MIN_TRANSFORMERS_FOR_GGUF:
        floor = ".".join(map(str, MIN_TRANSFORMERS_FOR_GGUF))
        raise TuneforgeError(
            f"transformers {version} converts GGUF tokenizers incorrectly (Gemma 3 words are "
            f"split into pieces the model was not trained on); pip install 'transformers>={floor}'"
        )


def load_gguf_tokenizer(gguf_path: Path):
    """The tokenizer (with its chat template, if any) stored in a GGUF's metadata; no weights."""
    import transformers
    from transformers import AutoTokenizer

    check_gguf_converter(transformers.__version__)
    try:
        return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except unreadable_file_errors() as exc:
        raise TuneforgeError(
            f"{gguf_path}: cannot read a tokenizer from this GGUF ({exc})"
        ) from None


def _skip_random_init() -> contextlib.AbstractContextManager:
    """Skip random initialisation (~2 s for 135M params): every weight is overwritten next."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # moved in some transformers version: only slower without it
        return contextlib.nullcontext()
    return no_init_weights()


def tokenizer_for_gguf(gguf_path: Path):
    """A GGUF's tokenizer without touching its weights, from the fastest place that has it.

    The model cache entry if the GGUF was converted, else a tokenizer-only cache entry, else the
    GGUF metadata (~2.5 s for SmolLM2's 49k-token vocabulary), which is then cached.
    """
    from transformers import AutoTokenizer

    sha = file_sha256(gguf_path)
    for directory in (entry_dir(sha), tokenizer_entry_dir(sha)):
        if directory.is_dir():
            return AutoTokenizer.from_pretrained(directory)
    tokenizer = load_gguf_tokenizer(gguf_path)
    # Best effort: an unwritable cache only costs speed next time.
    with contextlib.suppress(OSError):
        publish_directory(tokenizer_entry_dir(sha), tokenizer.save_pretrained)
    return tokenizer


def dequantize_gguf(gguf_path: Path):
    """The GGUF's weights as a plain float32 `PreTrainedModel` that can be saved and trained."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except unreadable_file_errors() as exc:
        # transformers raises ValueError for an architecture it cannot map from GGUF.
        raise TuneforgeError(
            f"{gguf_path}: cannot load this GGUF with transformers ({exc})"
        ) from None

    config = copy.deepcopy(loaded.config)
    # The GGUF quantizer is what makes the model refuse save_pretrained/Trainer; the weights
    # themselves are already dense float32, so the rebuilt model simply has no quantizer.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with _skip_random_init():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.get_text_config().tie_word_embeddings else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise TuneforgeError(
            f"{gguf_path}: the GGUF weights do not fit the {type(plain).__name__} built from "
            f"its own metadata (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]})"
        )
    # load_state_dict copies into the existing parameters, so tied ones stay one tensor; this
    # re-ties anyway in case a transformers version materialized lm_head separately.
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(loaded.generation_config)
    del loaded
    return plain.eval()


def convert_gguf(gguf_path: Path, out_dir: Path, *, sha256: str | None = None) -> None:
    """Write `gguf_path` as a plain HF model directory (safetensors + tokenizer) into `out_dir`."""
    import transformers

    tokenizer = load_gguf_tokenizer(gguf_path)
    model = dequantize_gguf(gguf_path)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record = {
        "gguf": str(gguf_path.resolve()),
        "sha256": sha256,
        "transformers": transformers.__version__,
    }
    (out_dir / SOURCE_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    # safetensors writes its file 0600; make the entry readable like the rest of the cache.
    for item in out_dir.iterdir():
        item.chmod(0o644)


def materialize_gguf(gguf_path: Path) -> tuple[Path, str, bool]:
    """The cache entry for a GGUF, converting it first if needed.

    Returns (entry directory, sha256 of the file, whether the entry already existed).
    """
    sha = file_sha256(gguf_path)
    target = entry_dir(sha)
    if target.is_dir():
        return target, sha, True
    log.info("converting %s to a trainable model in %s (once per file)", gguf_path, target)
    publish_directory(target, lambda tmp: convert_gguf(gguf_path, tmp, sha256=sha))
    return target, sha, False
