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


def test_step_profiler_covers_the_asked_steps(tmp_path):
    train_throughput = load_benchmark("train_throughput")

    def profile(first: int) -> dict:
        profiler = train_throughput.StepProfiler(first, 2, tmp_path / "table.txt")
        x = torch.ones(4)
        for step in range(1, 8):  # step n runs n additions before after_step(n)
            for _ in range(step):
                x = x + 1
            profiler.after_step(step)
        return profiler.summary

    early, late = profile(3), profile(5)  # steps 3-4: 7 additions; steps 5-6: 11
    assert early["steps"] == 2 and early["ms_per_step"] >= 0
    assert late["aten_calls_per_step"] / early["aten_calls_per_step"] == pytest.approx(11 / 7)
    assert "aten::add" in (tmp_path / "table.txt").read_text()
    with pytest.raises(SystemExit, match="profile-from"):
        train_throughput.StepProfiler(1, 2, tmp_path / "t.txt")
