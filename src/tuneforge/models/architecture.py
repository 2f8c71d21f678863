"""Facts about a loaded model's architecture that batching and decoding depend on."""

from __future__ import annotations

from typing import Any


def sliding_window(model: Any) -> int | None:
    """The attention window of a model with sliding-window layers (Gemma 3, Mistral), else None.

    Such layers see only the last `window` *columns* of the cache, padding included, so anything
    that lays tokens out other than one plain sequence per row is exact only while every
    example's span fits the window: the middle padding of a shared prefix ([prefix][pad][suffix],
    eval) would hide real tokens that an unpadded sequence still sees (left padding does not:
    pads precede every real token), and a custom block mask over several packed examples
    (training) replaces the window altogether.
    """
    return config_sliding_window(getattr(model, "config", None))


def config_sliding_window(config: Any) -> int | None:
    """`sliding_window` from a model's config (a `PretrainedConfig`), before any weights load."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    return window


def is_prompt_learning(model: Any) -> bool:
    """Prompt or prefix tuning: the PEFT forward adds virtual tokens or past key/values."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))
