"""LoRA adapters held in memory on one base model: loaded on demand, evicted least-recently-used.

All adapters live in one `PeftModel` (`load_adapter` / `delete_adapter`), which is what lets one
forward pass serve rows of different adapters (`adapter_names=[...]`, "__base__" for the base).
Each adapter is stored under its registration key (`tf7`), not its public name: PEFT keeps
adapters in `nn.ModuleDict`s, whose keys cannot contain '.', and a re-registered name must never
reuse the weights of the adapter it replaced.

Thread safety: the model is used and changed only while holding `lock` (the engine's worker
holds it around each batch; admin load/unload take it too).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.registry import AdapterSpec

log = logging.getLogger("tuneforge.serve")


class ResidentAdapters:
    """At most `capacity` adapters in memory on `base`, evicting the least recently used."""

    def __init__(self, base: Any, capacity: int, metrics: Metrics | None = None) -> None:
        if capacity < 1:
            raise TuneforgeError(f"--max-adapters must be at least 1 (got {capacity})")
        self.capacity = capacity
        self.lock = threading.RLock()
        self._base = base
        self._peft: Any = None
        self._lru: OrderedDict[str, AdapterSpec] = OrderedDict()  # key -> spec, oldest first
        self._metrics = metrics

    @property
    def model(self) -> Any:
        """What to run: the PeftModel while any adapter is loaded, else the plain base."""
        return self._peft if self._peft is not None else self._base

    @property
    def has_adapters(self) -> bool:
        return self._peft is not None

    def resident(self) -> list[str]:
        """Public names of the loaded adapters, least recently used first."""
        return [spec.name for spec in self._lru.values()]

    def activate(self, specs: Iterable[AdapterSpec]) -> None:
        """Make every adapter in `specs` resident (caller holds `lock`); they become most recent.

        Evicts the least recently used adapters not in `specs` to stay within capacity.
        """
        wanted = list({spec.key: spec for spec in specs}.values())
        if len(wanted) > self.capacity:
            raise TuneforgeError(
                f"internal: a batch needs {len(wanted)} adapters but --max-adapters is "
                f"{self.capacity}"
            )
        for spec in wanted:
            if spec.key in self._lru:
                self._lru.move_to_end(spec.key)
                continue
            while len(self._lru) >= self.capacity:
                oldest = next(key for key in self._lru if key not in {s.key for s in wanted})
                self._drop(oldest)
            self._load(spec)

    def evict(self, spec: AdapterSpec) -> bool:
        """Free an adapter's weights if loaded (caller holds `lock`); True if it was resident."""
        if spec.key not in self._lru:
            return False
        self._drop(spec.key)
        return True

    def use_only(self, spec: AdapterSpec) -> None:
        """Make `spec` PEFT's active adapter, for adapters that cannot mix (DoRA)."""
        self._peft.set_adapter(spec.key)

    def clear_leaked_hooks(self) -> None:
        """Remove `adapter_names` hooks left behind by a generate call that raised.

        PEFT registers one forward pre-hook per LoRA layer for a mixed batch and removes them
        after the call, but not when the call raises: the stale hooks would then force the
        failed batch's adapter list onto every later forward.
        """
        if self._peft is None:
            return
        from peft.tuners.lora.model import _adapter_names_pre_forward_hook

        for module in self._peft.modules():
            for hook_id, hook in list(module._forward_pre_hooks.items()):
                if getattr(hook, "func", None) is _adapter_names_pre_forward_hook:
                    del module._forward_pre_hooks[hook_id]
                    module._forward_pre_hooks_with_kwargs.pop(hook_id, None)

    # -- loading -------------------------------------------------------------------------------

    def _load(self, spec: AdapterSpec) -> None:
        from peft import PeftModel

        from tuneforge.models.adapters import _quiet_peft_deprecations

        try:
            with _quiet_peft_deprecations():
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(
                        self._base, str(spec.path), adapter_name=spec.key, is_trainable=False
                    )
                else:
                    self._peft.load_adapter(
                        str(spec.path), adapter_name=spec.key, is_trainable=False
                    )
        except Exception as exc:  # a corrupt or mismatched safetensors file
            raise TuneforgeError(f"adapter {spec.name!r}: cannot load {spec.path}: {exc}") from None
        self._peft.eval()
        self._lru[spec.key] = spec
        log.info("loaded adapter %s from %s", spec.name, spec.path)
        if self._metrics:
            self._metrics.adapter_loads.inc()
            self._metrics.adapters_resident.set(len(self._lru))

    def _drop(self, key: str) -> None:
        spec = self._lru.pop(key)
        if not self._lru:
            # PEFT cannot run with zero adapters (it keeps the deleted one active), so the last
            # one goes by unwrapping: `unload` removes the LoRA layers without merging them.
            self._base = self._peft.unload()
            self._peft = None
        else:
            with warnings.catch_warnings():  # "adapter X was active, now Y": expected here
                warnings.simplefilter("ignore", UserWarning)
                self._peft.delete_adapter(key)
        log.info("evicted adapter %s", spec.name)
        if self._metrics:
            self._metrics.adapter_evictions.inc()
            self._metrics.adapters_resident.set(len(self._lru))
