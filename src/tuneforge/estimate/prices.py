"""The GPU table: memory, price and throughput per named GPU (gpus.yaml, or --prices FILE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import TuneforgeError

DEFAULT_TABLE = Path(__file__).with_name("gpus.yaml")
FIELDS = {"memory_gib": float, "price_per_hour": float, "bf16_tflops": float, "utilization": float}


@dataclass(frozen=True)
class Gpu:
    name: str
    label: str
    memory_gib: float
    price_per_hour: float
    bf16_tflops: float
    utilization: float


@dataclass(frozen=True)
class GpuTable:
    gpus: dict[str, Gpu]
    cuda_overhead_gib: float
    source: Path


def load_table(path: str | Path | None = None) -> GpuTable:
    """Read and check a GPU table; errors name the file and the field to fix."""
    source = Path(path) if path is not None else DEFAULT_TABLE
    if not source.is_file():
        raise TuneforgeError(f"--prices {source}: no such file")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TuneforgeError(f"{source}: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict) or not data["gpus"]:
        raise TuneforgeError(
            f"{source}: expected a mapping with 'gpus:' naming at least one GPU "
            f"(see {DEFAULT_TABLE} for the layout)"
        )
    gpus = {}
    for name, entry in data["gpus"].items():
        if not isinstance(entry, dict):
            raise TuneforgeError(f"{source}: gpus.{name}: expected a mapping of its fields")
        unknown = sorted(str(k) for k in entry if k not in FIELDS and k != "label")
        if unknown:
            raise TuneforgeError(
                f"{source}: gpus.{name}: unknown field {', '.join(map(repr, unknown))}; the "
                f"fields are {', '.join(FIELDS)} (and an optional label)"
            )
        values: dict[str, Any] = {}
        for field, kind in FIELDS.items():
            value = entry.get(field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise TuneforgeError(
                    f"{source}: gpus.{name}.{field}: expected a positive number (got {value!r})"
                )
            values[field] = kind(value)
        gpus[str(name).lower()] = Gpu(str(name).lower(), str(entry.get("label", name)), **values)
    overhead = data.get("cuda_overhead_gib", 0.8)
    if isinstance(overhead, bool) or not isinstance(overhead, int | float) or overhead < 0:
        raise TuneforgeError(f"{source}: cuda_overhead_gib: expected a number >= 0")
    return GpuTable(gpus, float(overhead), source)


def select(table: GpuTable, names: list[str] | None) -> list[Gpu]:
    """The GPUs asked for (all when None), in the order given."""
    if not names:
        return list(table.gpus.values())
    unknown = [n for n in names if n.lower() not in table.gpus]
    if unknown:
        raise TuneforgeError(
            f"--gpu {', '.join(unknown)}: not in {table.source}; known: {', '.join(table.gpus)} "
            "(add it to a copy of the table and pass --prices FILE)"
        )
    return [table.gpus[n.lower()] for n in names]
