"""Fixtures for tests/ui: hand-written run directories (fast, any shape, broken on purpose) and
real tiny runs trained in-process (for the playground and the browser tests).

One torch thread throughout, as in tests/serve: the machine may be shared.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_helpers import (
    prepared_data,
    train_tiny_run,
    write_compare_dir,
    write_finished_run,
    write_json,
)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """A runs directory with every case the list must handle:

    good (finished, evaluated), plain (finished, not evaluated), partial (training: config and
    metrics, no manifest, a half-written last line), corrupt (manifest.json not JSON), a
    prepare output (not a run), a hidden directory, and a `tuneforge compare` output.
    """
    root = tmp_path / "runs"
    write_finished_run(root, "good")
    write_finished_run(root, "plain", evaluated=False, lr=2e-3)
    partial = root / "partial"
    partial.mkdir()
    (partial / "config.yaml").write_text("model:\n  name: tiny-base\nmethod:\n  kind: lora\n")
    (partial / "metrics.jsonl").write_text(
        '{"step": 1, "train/loss": 2.0, "train/lr": 0.001}\n{"step": 2, "train/lo'
    )
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text("model: [unclosed\n")
    (corrupt / "manifest.json").write_text("{not json")
    write_json(root / "data-prepared" / "manifest.json", {"rows_in": 10})  # a prepare output
    (root / "data-prepared" / "train.jsonl").write_text("")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "config.yaml").write_text("model: {}\n")
    write_compare_dir(root / "sweep", ["good", "plain"])
    return root


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_model_dir) -> Path:
    """Real runs of `tuneforge train` on the tiny model: `alpha` (evaluated), `beta` (lr 1e-2)."""
    root = tmp_path_factory.mktemp("ui-real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_CACHE", str(root / "cache"))
        data = prepared_data(root / "data")
        runs = root / "runs"
        train_tiny_run(runs / "alpha", tiny_model_dir, data)
        train_tiny_run(runs / "beta", tiny_model_dir, data, "train.lr=1e-2")
        from tuneforge.eval.run import evaluate

        evaluate(
            runs / "alpha",
            None,
            baselines=("zero",),
            forgetting=False,
            variation=False,
            log=lambda _: None,
        )
    return runs


@pytest.fixture(scope="session")
def served_runs(tiny_runs, tmp_path_factory) -> Path:
    """The tiny runs plus `loud`: alpha with large random LoRA weights.

    Four training steps barely move a LoRA adapter (B starts at zero), so alpha may well answer
    exactly like the base; `loud` surely does not, so a pane showing the wrong model's answer
    is caught.
    """
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("ui-playground") / "runs"
    shutil.copytree(tiny_runs, root, ignore=shutil.ignore_patterns("checkpoints"))
    loud = root / "loud"
    shutil.copytree(root / "alpha", loud)
    weights = loud / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: torch.randn(t.shape, generator=generator) if "lora_" in name else t
        for name, t in load_file(weights).items()
    }
    save_file(tensors, weights, metadata={"format": "pt"})
    return root
