"""The served models: the base, and the adapters by name (validated, checked against the base).

`AdapterCatalog` knows *which* adapters exist (name -> run directory, tokenizer, labels); it never
touches weights, so both engines share it. Which adapters are in memory is the engine's business
(`resident.ResidentAdapters` for the transformers engine, vLLM's own LoRA cache for vLLM).

Every adapter served together runs on one base model, so an adapter trained on another base is
refused at registration: its run's model identity (the GGUF sha256 in manifest.json, else the
resolved `model.name` of its config.yaml) must equal the base's.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.serve.errors import bad_request, model_not_found

BASE_ROW = "__base__"
"""PEFT's placeholder adapter name for rows that run on the base model."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_RESERVED = {BASE_ROW}
_MIXABLE_KINDS = ("lora", "qlora")
_SERVABLE_KINDS = ("lora", "qlora", "dora")


def validate_name(name: str) -> str:
    """An adapter name is an identifier, never a path: letters, digits, `.`, `_`, `-`, `:`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name or name in _RESERVED:
        raise TuneforgeError(
            f"adapter name {name!r}: use 1-64 letters, digits, '.', '_', '-' or ':', starting "
            "with a letter or digit (no '/', no '..'; it is a name, not a path)"
        )
    return name


@dataclass(frozen=True)
class BaseInfo:
    """The base model as the API names and checks it."""

    id: str
    """The model id clients send (`--name`, else the packaged name or directory name)."""
    identity: str
    """What adapters are matched against (see `base_identity`)."""
    tokenizer: Any
    context_length: int
    stop_ids: frozenset[int] = frozenset()
    """Tokens that end an assistant turn (eos and the template's turn end)."""


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    key: str
    """Unique per registration: the adapter's name inside PEFT (public names may hold '.')."""
    path: Path
    method: str
    mixable: bool
    """LoRA without DoRA: can share a batch with other adapters (PEFT `adapter_names`)."""
    tokenizer: Any
    labels: list[str] | None
    label_set: Any = None
    """`tuneforge.eval.labels.LabelSet` for classification runs."""
    rank: int = 0
    stop_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Target:
    """What a request's `model` resolved to: the base (adapter None) or one adapter."""

    name: str
    adapter: AdapterSpec | None
    tokenizer: Any
    stop_ids: frozenset[int]

    @property
    def labels(self) -> list[str] | None:
        return self.adapter.labels if self.adapter else None


def base_identity(info: Any) -> str:
    """Identity of a loaded base from its `ModelInfo`: GGUF sha256, directory, or hub id."""
    if info.sha256:
        return f"gguf:{info.sha256}"
    if info.source_kind == "directory":
        return f"dir:{Path(info.path).resolve()}"
    return f"{info.source_kind}:{info.path}"


def run_base_identity(run_path: Path, model_name: str) -> str:
    """Identity of the base a run was trained on (manifest first: it survives moved files)."""
    manifest = run_path / "manifest.json"
    if manifest.is_file():
        try:
            sha = json.loads(manifest.read_text(encoding="utf-8")).get("model", {}).get("sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            sha = None
        if sha:
            return f"gguf:{sha}"
    from tuneforge.models.sources import resolve_source

    source = resolve_source(model_name)
    if source.is_gguf:
        from tuneforge.models.cache import file_sha256

        assert source.path is not None
        return f"gguf:{file_sha256(source.path)}"
    if source.kind == "directory" and source.path is not None:
        return f"dir:{source.path.resolve()}"
    return f"{source.kind}:{source.hub_id or model_name}"


def inspect_adapter(name: str, path: str | Path, base: BaseInfo, key: str) -> AdapterSpec:
    """Check that `path` is an adapter run servable on `base`; TuneforgeError says why not."""
    from tuneforge.eval.labels import LabelSet
    from tuneforge.models.tokenizer import load_saved_tokenizer, stop_token_ids
    from tuneforge.models.trained import inspect_run

    validate_name(name)
    run = inspect_run(path)
    method = run.config.method.kind
    if run.weights != "adapter":
        raise TuneforgeError(
            f"adapter {name!r}: {run.path} is a full fine-tune, not an adapter; serve it as the "
            f"base (--base {run.path})"
        )
    adapter_config = _adapter_config(run.path)
    if adapter_config.get("peft_type") != "LORA" or method not in _SERVABLE_KINDS:
        raise TuneforgeError(
            f"adapter {name!r}: {run.path} is a {method} adapter; serve supports LoRA-family "
            f"adapters ({', '.join(_SERVABLE_KINDS)}), which share one base and one batch"
        )
    trained_on = run_base_identity(run.path, run.config.model.name)
    if trained_on != base.identity:
        raise TuneforgeError(
            f"adapter {name!r}: {run.path} was trained on model {run.config.model.name!r} "
            f"({trained_on}), but this server's base is {base.id!r} ({base.identity}); every "
            "adapter must share the base: start another server with that --base"
        )
    tokenizer = load_saved_tokenizer(run.path)
    if len(tokenizer) != len(base.tokenizer):
        raise TuneforgeError(
            f"adapter {name!r}: its tokenizer has {len(tokenizer)} tokens, the base's "
            f"{len(base.tokenizer)}; it was not trained on this base"
        )
    label_set = None
    if run.labels is not None:
        # Answer tokens do not depend on the question, so one neutral context serves all requests.
        label_set = LabelSet.build(tokenizer, run.labels, [{"role": "user", "content": "?"}])
    mixable = method in _MIXABLE_KINDS and not adapter_config.get("use_dora", False)
    return AdapterSpec(
        name=name,
        key=key,
        path=run.path,
        method=method,
        mixable=mixable,
        tokenizer=tokenizer,
        labels=run.labels,
        label_set=label_set,
        rank=int(adapter_config.get("r") or 0),
        stop_ids=frozenset(stop_token_ids(tokenizer)),
    )


def _adapter_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TuneforgeError(f"{path / 'adapter_config.json'}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TuneforgeError(f"{path / 'adapter_config.json'}: expected a JSON object")
    return data


@dataclass
class AdapterCatalog:
    """Registered adapters by public name (thread-safe: the API and admin calls share it)."""

    base: BaseInfo
    _specs: dict[str, AdapterSpec] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    def register(self, name: str, path: str | Path) -> AdapterSpec:
        """Validate and add an adapter (weights are not loaded here)."""
        validate_name(name)
        if name == self.base.id:
            raise TuneforgeError(f"adapter name {name!r} is the base model's id; pick another")
        with self._lock:
            if name in self._specs:
                raise TuneforgeError(f"adapter {name!r} is already registered; unload it first")
            self._counter += 1
            key = f"tf{self._counter}"
        spec = inspect_adapter(name, path, self.base, key)  # slow (tokenizer): outside the lock
        with self._lock:
            if name in self._specs:
                raise TuneforgeError(f"adapter {name!r} is already registered; unload it first")
            self._specs[name] = spec
        return spec

    def unregister(self, name: str) -> AdapterSpec:
        if name == self.base.id:
            raise bad_request(
                f"{name!r} is the base model, which is served for the server's lifetime; only "
                "adapters can be unloaded",
                param="name",
            )
        with self._lock:
            spec = self._specs.pop(name, None)
        if spec is None:
            raise model_not_found(name)
        return spec

    def get(self, name: str) -> AdapterSpec | None:
        with self._lock:
            return self._specs.get(name)

    def resolve(self, model: str) -> Target:
        """The request's `model` -> base or adapter; unknown names are a 404."""
        if model == self.base.id:
            return Target(model, None, self.base.tokenizer, self.base.stop_ids)
        spec = self.get(model)
        if spec is None:
            raise model_not_found(model)
        return Target(model, spec, spec.tokenizer, spec.stop_ids)

    def adapters(self) -> list[AdapterSpec]:
        with self._lock:
            return list(self._specs.values())
