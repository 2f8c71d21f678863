"""Prometheus metrics for `GET /metrics`, in the text exposition format (version 0.0.4).

A small exporter of our own rather than `prometheus_client`: the server needs three metric types
and one text format, and this keeps the `serve` extra at fastapi + uvicorn. Label values are
bounded by the registered adapters and our own route names, never by raw client input.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelKey = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: LabelKey, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelKey:
        return tuple(str(labels.get(n, "")) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        return self.header() + [
            f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: Sequence[float], labelnames: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = (*sorted(buckets), math.inf)
        self._counts: dict[LabelKey, list[int]] = {}
        self._sums: dict[LabelKey, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, list(v), self._sums[k]) for k, v in self._counts.items())
        for key, counts, total in items:
            for bound, count in zip(self.buckets, counts, strict=True):
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {count}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {counts[-1]}")
        return lines


_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Every metric the server exports; the app and the engine update them."""

    def __init__(self) -> None:
        self.requests = Counter(
            "tuneforge_requests_total", "API requests by route, model and status.",
            ("route", "model", "status"),
        )  # fmt: skip
        self.request_seconds = Histogram(
            "tuneforge_request_seconds", "Request latency, to the last byte.", _LATENCY, ("route",)
        )
        self.prompt_tokens = Counter(
            "tuneforge_prompt_tokens_total", "Prompt tokens processed.", ("model",)
        )
        self.completion_tokens = Counter(
            "tuneforge_completion_tokens_total", "Tokens generated.", ("model",)
        )
        self.batches = Counter(
            "tuneforge_batches_total",
            "Batched model calls by kind (generate, classify).",
            ("kind",),
        )
        self.batch_rows = Histogram(
            "tuneforge_batch_rows", "Requests per batched model call.", _ROWS
        )
        self.batch_adapters = Histogram(
            "tuneforge_batch_adapters", "Distinct adapters (and base) per batched call.", _ROWS
        )
        self.queue_depth = Gauge("tuneforge_queue_depth", "Requests waiting for a batch.")
        self.adapters_resident = Gauge("tuneforge_adapters_resident", "Adapters loaded in memory.")
        self.adapter_loads = Counter("tuneforge_adapter_loads_total", "Adapter weight loads.")
        self.adapter_evictions = Counter(
            "tuneforge_adapter_evictions_total", "Adapters evicted (LRU or unloaded)."
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in vars(self).values():
            if isinstance(metric, _Metric):
                lines += metric.render()
        return "\n".join(lines) + "\n"
