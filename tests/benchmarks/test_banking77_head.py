"""The batching of benchmarks/banking77_head.py: random or length-grouped, every row once."""

from __future__ import annotations

import random

from benchmark_module import load_benchmark

head = load_benchmark("banking77_head")


def _padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_cover_every_row_once_with_less_padding():
    rng = random.Random(7)
    lengths = [rng.randint(3, 80) for _ in range(1000)]
    grouped = head._length_grouped_batches(lengths, 16, random.Random(0))
    plain = head._batches(len(lengths), 16, random.Random(0))
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert all(len(b) <= 16 for b in grouped) and len(grouped) == len(plain)
    assert _padding(grouped, lengths) < _padding(plain, lengths) / 4
    # seeded: the same rng seed gives the same batches, another seed other batches
    assert head._length_grouped_batches(lengths, 16, random.Random(0)) == grouped
    assert head._length_grouped_batches(lengths, 16, random.Random(1)) != grouped
