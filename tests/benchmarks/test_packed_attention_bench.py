"""benchmarks/packed_attention.py measures both ways on the same row and reports them."""

import json

import pytest
from benchmark_module import load_benchmark

bench = load_benchmark("packed_attention")


def test_prints_one_line_per_run_with_both_timings(capsys):
    bench.main(["--examples", "2,30", "--repeats", "1"])
    line = json.loads(capsys.readouterr().out.strip())
    assert line["benchmark"] == "packed_attention" and line["dtype"] == "float32"
    short, long = line["rows"]
    # 2 examples fit one chunk of 256 tokens; 30 (19 + 30 x 10..39 tokens) need at least two
    assert line["chunk_tokens"] == 256
    assert short["examples"] == 2 and short["chunks"] == 1
    assert long["row_tokens"] >= 19 + 30 * 10 and long["chunks"] >= 2
    for row in line["rows"]:
        assert row["mask_ms"] > 0 and row["chunks_ms"] > 0
        # the ratio is of the unrounded times
        assert row["mask_over_chunks"] == pytest.approx(row["mask_ms"] / row["chunks_ms"], rel=0.05)
