"""benchmarks/step_ops.py: the op counter, and train_throughput's MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from benchmark_module import load_benchmark


def test_count_ops_counts_forward_and_backward_ops():
    step_ops = load_benchmark("step_ops")
    x = torch.ones(3, requires_grad=True)

    def run() -> None:
        (x * 2).sum().backward()

    ops = step_ops.count_ops(run)
    assert ops["mul"] >= 1 and ops["sum"] == 1  # forward
    assert sum(ops.values()) > 3  # and the backward's ops, dispatched under the same mode
    assert step_ops.count_ops(lambda: None) == {}


def test_mfu_is_four_n_flops_per_token_over_the_peak():
    train_throughput = load_benchmark("train_throughput")
    # 1,000 tokens/s x 4 x 1e9 weights = 4 TFLOP/s, 0.4 % of a 1,000 TFLOP/s peak
    assert train_throughput.mfu(1_000, 10**9, 1_000) == pytest.approx(0.004)
