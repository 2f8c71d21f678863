"""`tuneforge eval --device cuda` on tiny runs. Skipped without a CUDA GPU (CI has none)."""

from __future__ import annotations

import json

import pytest
import torch
from test_eval_cli import invoke, make_run

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.usefixtures("one_torch_thread", "isolated_cache"),
]


@pytest.mark.parametrize("kind", ["lora", "qlora", "full"])
@pytest.mark.parametrize("scoring", ["constrained", "exact"])
def test_classification_eval_on_cuda_agrees_with_cpu(kind, scoring, tiny_model_dir, tmp_path):
    if kind == "qlora":
        pytest.importorskip("bitsandbytes")
    run = make_run(tmp_path, tiny_model_dir, "classification", kind)
    test = tmp_path / "data-classification" / "test.jsonl"
    common = ["--data", test, "--baselines", "zero", "--no-forgetting", "--no-variation"]
    common += ["--scoring", scoring]
    results = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        result = invoke(run, *common, "--device", device, "-o", out)
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics["variants"]) == {"tuned", "base_zero"}
        text = (out / "predictions.jsonl").read_text().splitlines()
        results[device] = [json.loads(line)["tuned"] for line in text]
    # bfloat16 on the GPU against float32 on the CPU: a near tie may flip, not the model.
    same = sum(a == b for a, b in zip(results["cuda"], results["cpu"], strict=True))
    assert same >= len(results["cpu"]) - 2
