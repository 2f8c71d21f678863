"""The comparison grid: `KEY=V1,V2,...` specs -> the cartesian product of named config variants.

Keys are the config's own dotted keys (`method.r`, `train.lr`), plus the short forms people
write: `method=lora,qlora` sets `method.kind`, and `lora.X` means `method.X` (`lora.r=4,16`).
Values are read as YAML like any `a.b=value` override (so `1e-4`, `true`, `[q_proj, v_proj]`);
commas inside brackets belong to the value.

Every variant's config is resolved (defaults < YAML < overrides < the variant's values) here,
so a bad key or value fails before any run starts, naming the grid key as the user typed it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import TrainConfig, parse_override, resolve
from tuneforge.errors import ConfigError

# Short forms from the common LoRA write-ups -> the config's own keys.
ALIASES = {"method": "method.kind"}
PREFIX_ALIASES = {"lora.": "method.", "qlora.": "method."}
# The data must be the same for every variant, or the comparison compares datasets.
FORBIDDEN = ("data.dir",)


@dataclass(frozen=True)
class GridAxis:
    spec: str
    """As the user typed it: `lora.r=4,16,64`."""
    key: str
    """The config key it sets: `method.r`."""
    values: tuple[Any, ...]
    raw: tuple[str, ...]
    """Each value's text, for override strings and names."""


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]
    """`key=value` overrides of this variant (on top of the command's own overrides)."""
    config: TrainConfig
    settings: dict[str, Any]
    """The grid values of this variant, by config key."""


def canonical_key(key: str) -> str:
    """`method` -> `method.kind`, `lora.r` -> `method.r`; config keys pass through."""
    key = key.strip()
    if key in ALIASES:
        return ALIASES[key]
    for short, full in PREFIX_ALIASES.items():
        if key.startswith(short):
            return full + key[len(short) :]
    return key


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets/braces/quotes: `[q,v],all-linear` -> 2 values."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def parse_axis(spec: str) -> GridAxis:
    key, sep, raw = spec.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--grid {spec!r}: expected KEY=V1,V2,... e.g. lora.r=4,16,64 or method=lora,qlora"
        )
    full = canonical_key(key)
    if full in FORBIDDEN:
        raise ConfigError(
            f"--grid {spec!r}: {full} cannot vary within one comparison (every variant must see "
            "the same data); run one compare per dataset"
        )
    texts = split_values(raw)
    if any(not text for text in texts):
        raise ConfigError(f"--grid {spec!r}: an empty value; list values as {key}=A,B,C")
    values = tuple(parse_override(f"{full}={text}")[1] for text in texts)
    seen: list[Any] = []
    for text, value in zip(texts, values, strict=True):
        if value in seen:
            raise ConfigError(f"--grid {spec!r}: value {text!r} is listed twice")
        seen.append(value)
    return GridAxis(spec, full, values, tuple(texts))


def parse_grid(specs: list[str]) -> list[GridAxis]:
    axes = [parse_axis(spec) for spec in specs]
    keys = [axis.key for axis in axes]
    for key in keys:
        if keys.count(key) > 1:
            same = [axis.spec for axis in axes if axis.key == key]
            raise ConfigError(f"--grid: {' and '.join(same)} both set {key}; give it once")
    return axes


def _label(key: str, text: str) -> str:
    last = key.rsplit(".", 1)[-1]
    if last in ("kind", "name"):
        text = Path(text).name or text  # model.name may be a path
        return text
    return f"{last}{text}" if re.fullmatch(r"[-+0-9.eE]+", text) else f"{last}-{text}"


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-.") or "variant"


def variant_names(axes: list[GridAxis], combos: list[tuple[int, ...]]) -> list[str]:
    """Readable, stable names: `lora_r16`; the full key if short ones collide; else numbered."""
    short = [
        _clean("_".join(_label(a.key, a.raw[i]) for a, i in zip(axes, combo, strict=True)))
        for combo in combos
    ]
    if len(set(short)) == len(short):
        return short if axes else ["base"]
    full = [
        _clean("_".join(f"{a.key}={a.raw[i]}" for a, i in zip(axes, combo, strict=True)))
        for combo in combos
    ]
    if len(set(full)) == len(full):
        return full
    return [f"{n + 1:02d}-{name}" for n, name in enumerate(short)]


def _get(cfg: TrainConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def expand(
    config: str | Path, overrides: list[str], specs: list[str]
) -> tuple[list[GridAxis], list[Variant]]:
    """The axes and the validated variants (grid order: the last axis varies fastest)."""
    resolve(TrainConfig, config, overrides)  # the command's own config first: clearer errors
    axes = parse_grid(specs)
    combos = list(itertools.product(*(range(len(a.values)) for a in axes)))
    names = variant_names(axes, combos)
    variants = []
    for name, combo in zip(names, combos, strict=True):
        extra = tuple(f"{a.key}={a.raw[i]}" for a, i in zip(axes, combo, strict=True))
        try:
            cfg = resolve(TrainConfig, config, [*overrides, *extra])
        except ConfigError as exc:
            used = ", ".join(
                f"{a.spec.partition('=')[0]}={a.raw[i]}" for a, i in zip(axes, combo, strict=True)
            )
            raise ConfigError(f"--grid variant {name} ({used}): {exc}") from None
        # From the validated config, so `1e-4` (a string to YAML) shows as the number it became.
        settings = {a.key: _get(cfg, a.key) for a in axes}
        variants.append(Variant(name, extra, cfg, settings))
    return axes, variants
